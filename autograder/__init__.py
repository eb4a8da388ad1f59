"""An nbgrader-compatible autograder that judges student code outside the student's process.

The flow, one module each: course (layout, settings) -> release (student version) ->
submissions (collect into submitted/) -> assemble (which cells run) -> execute (child process)
-> verify (hidden tests, trusted side) -> results -> gradebook (pandas, gradebook.db) ->
feedback, export.
"""

__version__ = "0.1.0"
