"""The errors that mean "the input is wrong": shown to the instructor as one clear line."""

from autograder.assemble import InvalidNotebook
from autograder.assignment import AssignmentError
from autograder.course import CourseError
from autograder.execute.warm import UnsafeSandboxError
from autograder.export import ExportError
from autograder.gradebook_db import GradebookError
from autograder.late import LateError
from autograder.lock import CourseBusy
from autograder.release import ReleaseError
from autograder.roster import RosterError
from autograder.store import StoreError
from autograder.submissions import SubmissionError
from autograder.verify.hidden import HiddenTestsError

USER_ERRORS = (CourseError, AssignmentError, HiddenTestsError, SubmissionError, ReleaseError,
               InvalidNotebook, GradebookError, UnsafeSandboxError, LateError, RosterError,
               ExportError, CourseBusy, StoreError)
