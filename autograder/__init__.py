"""The course's trusted autograder.

It picks a submission's solution cells with the help of the trusted source
notebook, runs them in a sandboxed process, and judges the results on its own
side against the float64 oracle, with the test cases of `normgrad.cases`.
Run `python -m autograder --help`.
"""
