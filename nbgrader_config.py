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

# Late work (autograder/late.py). The due date is nbgrader's own:
#   nbgrader db assignment add backprop --duedate="2026-11-20 17:00:00 UTC"
# and extensions are given with `autograder extension add|import`. The penalty is nbgrader's
# LateSubmissionPlugin, computed when a result is recorded and written to gradebook.db, so
# `nbgrader export` shows it too:
# c.LateSubmissionPlugin.penalty_method = "zero"  # "none" (the default) or "zero"
# c.AssignLatePenalties.plugin_class = "late_penalty.PerDay"  # or a class of your own, in a
#                                                             # module of this folder
# A submission from an LMS download with the LMS's late flag but no usable time: "late"
# counts it one second past its due date, "ignore" counts it on time.
# c.LatePolicy.lms_flag_rule = "late"

# Exports (`autograder export`): final scores read from gradebook.db, as nbgrader computes them.
# c.ScoreSettings.missing = "zero"  # a rostered student with no submission: "zero" or "blank"
# Canvas's gradebook import (`--format canvas`; best with `--template <gradebook CSV from Canvas>`):
# c.CanvasExport.assignment_id = "123456"  # the number in the assignment's Canvas URL
# c.CanvasExport.assignment_name = "Backprop"  # its name in Canvas (default: the assignment's)
# c.CanvasExport.points_possible = 20  # Canvas's points when no template gives them (scaled)
# Moodle's grading worksheet (`--format moodle --template worksheet.csv`):
# c.MoodleExport.feedback_comments = True  # also fill "Feedback comments" with a summary

# LMS downloads (`autograder grade backprop submissions.zip`): Canvas, Moodle and Blackboard zips
# are recognised by their file names; students are keyed by the LMS's id. Their times are the
# LMS server's local time, converted to UTC from this zone (an IANA name; default UTC):
# c.LmsDownload.timezone = "America/Toronto"
# Another naming: nbgrader's own zip-collect settings, which then decide alone (re.match on the
# path in the zip; groups student_id (required), file_id, timestamp, and ours: late, name,
# submission_id):
# c.FileNameCollectorPlugin.named_regexp = (
#     r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>\w+)")
# c.FileNameCollectorPlugin.valid_ext = [".ipynb"]  # what is graded; other files are listed
