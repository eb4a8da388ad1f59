"""The course directory: nbgrader's layout plus where this autograder keeps hidden tests."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE = "nbgrader_config.py"
DEFAULT_TIMEOUT = 60.0
DEFAULT_LOCKED_CELL_TIMEOUT = 10.0
DEFAULT_PROBE_TIMEOUT = 2.0
SECRET_FILE = ".autograder-secret"  # draws each submission's unseen inputs; never in a job


class CourseError(Exception):
    """The course directory or its configuration is not usable."""


@dataclass(frozen=True)
class Course:
    root: Path
    course_id: str
    timeout: float = DEFAULT_TIMEOUT  # seconds for a whole notebook
    scheduler: str | None = None  # a Dask scheduler's address: grade there, not locally
    locked_cell_timeout: float = DEFAULT_LOCKED_CELL_TIMEOUT  # one release cell
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT  # one call of the student's code by a probe
    # The whole traitlets Config read from nbgrader_config.py: settings declared as traits of a
    # traitlets Configurable elsewhere are read with `TheirClass(config=course.config)`.
    config: Any = field(default=None, compare=False, repr=False)

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
        seconds = {}
        for name, default in (("timeout", DEFAULT_TIMEOUT),
                              ("locked_cell_timeout", DEFAULT_LOCKED_CELL_TIMEOUT),
                              ("probe_timeout", DEFAULT_PROBE_TIMEOUT)):
            try:
                seconds[name] = float(config.Autograder.get(name, default))
            except (TypeError, ValueError):
                seconds[name] = -1.0
            if not seconds[name] > 0:
                raise CourseError(f"{config_path}: c.Autograder.{name} must be a positive "
                                  f"number of seconds, got {config.Autograder.get(name)!r}")
        scheduler = config.Autograder.get("scheduler") or None
        return cls(root=root, course_id=course_id, scheduler=scheduler, config=config, **seconds)

    def secret(self) -> bytes:
        """The course's secret (made on first use, readable by its owner only): with each
        notebook's hash it draws the inputs of the unseen tests. Never sent to a job."""
        path = self.root / SECRET_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            secret = path.read_bytes()
            if len(secret) < 16:
                raise CourseError(f"{path} is too short to be the course's secret: delete it "
                                  "to make a new one (students' unseen inputs change)") from None
            return secret
        secret = secrets.token_bytes(32)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
        return secret

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
