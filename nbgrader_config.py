# nbgrader configuration for this course. The repository root is the course directory:
# source/ (instructor notebooks), release/ (student versions), submitted/, autograded/, feedback/,
# gradebook.db -- nbgrader's own layout, so formgrader and `nbgrader export` work unchanged.
# Hidden tests live in hidden_tests/<assignment>/, outside source/, so they are never released.
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "backprop-course"

# The autograder's own settings (read by `autograder`, ignored by nbgrader).
c.Autograder.timeout = 60  # seconds per submission, wall clock
# c.Autograder.scheduler = "tcp://scheduler:8786"  # grade on an existing Dask cluster

# formgrader's Autograde and Generate Feedback buttons (and `nbgrader autograde`,
# `nbgrader generate_feedback`) run THIS grader, so its scores and feedback stand whichever
# is used (autograder/nbgrader_plugins.py). nbgrader's Execute preprocessor is left out:
# student code never runs outside the sandbox, nor inside the Jupyter server. The one student
# nbgrader autogrades is graded by `autograder` in a subprocess (an unchanged notebook keeps
# its stored result), our scores go into gradebook.db, and nbgrader's late penalty and
# metadata check still run after it.
c.Autograde.autograde_preprocessors = [
    "autograder.nbgrader_plugins.GradeWithAutograder",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# Generate Feedback writes our feedback (hidden-test messages, our score) from the stored result.
c.GenerateFeedback.exporter_class = "autograder.nbgrader_plugins.FeedbackExporter"
c.GenerateFeedback.preprocessors = []
