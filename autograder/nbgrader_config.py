"""nbgrader's configuration for this course.

The course's layout is nbgrader's: `solutions/` is the source directory (notebooks
with solutions and hidden tests) and `exercises/` the release directory (the
student notebooks, generated, never edited by hand). Use it from the repository
root with `--NbGrader.config_file=autograder/nbgrader_config.py` (nbgrader 0.9.6 ignores
`--config`: "Unrecognized alias"), or through
`python -m autograder release`.
"""

import os

c = get_config()  # noqa: F821  (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
