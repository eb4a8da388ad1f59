# nbgrader configuration for this course. The repository root is the course directory:
# source/ (instructor notebooks), release/ (student versions), submitted/, autograded/, feedback/,
# gradebook.db -- nbgrader's own layout, so formgrader and `nbgrader export` work unchanged.
# Hidden tests live in hidden_tests/<assignment>/, outside source/, so they are never released.
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "backprop-course"

# The autograder's own settings (read by `autograder`, ignored by nbgrader).
c.Autograder.timeout = 60  # seconds per submission, wall clock
# c.Autograder.scheduler = "tcp://scheduler:8786"  # grade on an existing Dask cluster

# Exports (`autograder export`): final scores read from gradebook.db, as nbgrader computes them.
# c.ScoreSettings.missing = "zero"  # a rostered student with no submission: "zero" or "blank"
# Canvas's gradebook import (`--format canvas`; best with `--template <gradebook CSV from Canvas>`):
# c.CanvasExport.assignment_id = "123456"  # the number in the assignment's Canvas URL
# c.CanvasExport.assignment_name = "Backprop"  # its name in Canvas (default: the assignment's)
# c.CanvasExport.points_possible = 20  # Canvas's points when no template gives them (scaled)
# Moodle's grading worksheet (`--format moodle --template worksheet.csv`):
# c.MoodleExport.feedback_comments = True  # also fill "Feedback comments" with a summary
