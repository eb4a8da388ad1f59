# nbgrader configuration for this course. The repository root is the course directory:
# source/ (instructor notebooks), release/ (student versions), submitted/, autograded/, feedback/,
# gradebook.db -- nbgrader's own layout, so formgrader and `nbgrader export` work unchanged.
# Hidden tests live in hidden_tests/<assignment>/, outside source/, so they are never released.
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "backprop-course"

# The autograder's own settings (read by `autograder`, ignored by nbgrader).
c.Autograder.timeout = 60  # seconds per submission, wall clock
# c.Autograder.scheduler = "tcp://scheduler:8786"  # grade on an existing Dask cluster

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
