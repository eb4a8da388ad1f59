"""Trusted side of grading: hidden tests judge the data the student's process sent back.

Assignment authors import from here in hidden_tests/<assignment>/tests.py.
"""

from autograder.verify.data import as_number, as_tensor, close
from autograder.verify.hidden import HiddenTests, ProbeFailed, Probes, hidden_test, probe

__all__ = ["HiddenTests", "ProbeFailed", "Probes", "as_number", "as_tensor", "close",
           "hidden_test", "probe"]
