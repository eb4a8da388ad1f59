# nbgrader configuration for this course. The repository root is the course directory:
# source/ (instructor notebooks), release/ (student versions), submitted/, autograded/, feedback/,
# gradebook.db -- nbgrader's own layout, so formgrader and `nbgrader export` work unchanged.
# Hidden tests live in hidden_tests/<assignment>/, outside source/, so they are never released.
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "backprop-course"

# The autograder's own settings (read by `autograder`, ignored by nbgrader).
c.Autograder.timeout = 60  # seconds per submission, wall clock
# c.Autograder.scheduler = "tcp://scheduler:8786"  # grade on an existing Dask cluster
