"""What runs inside the sandbox: the program beside the student's code (`__main__`), the job and its
frames (`protocol`), plain data across the wall (`wire`), and how a case calls the student's code with
autograd locked (`calling`).

The sandbox mounts these files and nothing else of the course, so they import only the standard
library, NumPy and torch; a test checks it. The trusted side imports `protocol` and `wire` from here.
"""
