"""The one base of the errors that mean "the input is wrong" (a course, an assignment, a file,
a setting, a command given at the wrong time): the command line shows their message as one
clear line and exits 2. Anything else is a bug of the grader's and keeps its traceback.

A leaf module: every module that defines such an error imports this, and it imports nothing.
SubmissionError lives here because both collection (autograder.submissions) and the bounded
file reader every module uses (autograder.files) raise it.
"""


class UserError(Exception):
    """The instructor's input is wrong; the message names what, and how to put it right."""


class SubmissionError(UserError):
    """A submission, or a file given, cannot be read or collected; the message names the file
    and the problem."""
