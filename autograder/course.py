"""The course directory: nbgrader's layout plus where this autograder keeps hidden tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "nbgrader_config.py"
DEFAULT_TIMEOUT = 60.0


class CourseError(Exception):
    """The course directory or its configuration is not usable."""


@dataclass(frozen=True)
class Course:
    root: Path
    course_id: str
    timeout: float = DEFAULT_TIMEOUT
    scheduler: str | None = None  # a Dask scheduler's address: grade there, not locally

    @classmethod
    def load(cls, root: str | Path = ".") -> Course:
        """Read the course at `root`: nbgrader_config.py gives course_id and Autograder settings."""
        root = Path(root).resolve()
        config_path = root / CONFIG_FILE
        if not config_path.is_file():
            raise CourseError(f"{root} is not a course directory: no {CONFIG_FILE} there")
        # traitlets is what nbgrader itself uses to read this file, so both see the same values.
        from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

        try:
            config = PyFileConfigLoader(CONFIG_FILE, path=str(root)).load_config()
        except ConfigFileNotFound as error:  # pragma: no cover - checked above
            raise CourseError(str(error)) from error
        except Exception as error:
            raise CourseError(f"{config_path} could not be read: {error}") from error
        course_id = config.CourseDirectory.get("course_id") or "course"
        timeout = float(config.Autograder.get("timeout", DEFAULT_TIMEOUT))
        if timeout <= 0:
            raise CourseError(f"{config_path}: c.Autograder.timeout must be positive, "
                              f"got {timeout}")
        scheduler = config.Autograder.get("scheduler") or None
        return cls(root=root, course_id=course_id, timeout=timeout, scheduler=scheduler)

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.root / 'gradebook.db'}"

    def source_dir(self, assignment: str) -> Path:
        return self.root / "source" / assignment

    def release_dir(self, assignment: str) -> Path:
        return self.root / "release" / assignment

    def hidden_dir(self, assignment: str) -> Path:
        """Hidden tests and probes: outside source/, so nbgrader never copies them to release/."""
        return self.root / "hidden_tests" / assignment

    def submitted_dir(self, student_id: str, assignment: str) -> Path:
        return self.root / "submitted" / student_id / assignment

    def autograded_dir(self, student_id: str, assignment: str) -> Path:
        return self.root / "autograded" / student_id / assignment

    def feedback_dir(self, student_id: str, assignment: str) -> Path:
        return self.root / "feedback" / student_id / assignment

    def exports_dir(self) -> Path:
        return self.root / "exports"
