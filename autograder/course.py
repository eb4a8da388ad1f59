"""The course directory: nbgrader's layout plus where this autograder keeps hidden tests."""

from __future__ import annotations

import os
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Float, TraitError, Unicode, validate
from traitlets.config import Configurable

from autograder.errors import UserError

CONFIG_FILE = "nbgrader_config.py"
DEFAULT_TIMEOUT = 60.0
DEFAULT_LOCKED_CELL_TIMEOUT = 10.0
DEFAULT_PROBE_TIMEOUT = 2.0
SECRET_FILE = ".autograder-secret"  # draws each submission's unseen inputs; never in a job


# A student's key: the LMS's id (Canvas user id, Moodle participant id, Blackboard username) or
# nbgrader's folder name. Letters of any script, digits and _ . @ + -, starting with a letter or
# digit, in NFC form (one spelling of "josé", not two): it names folders and files.
STUDENT_ID = re.compile(r"^[^\W_][\w.@+-]{0,99}$")


def usable_student_id(sid: object) -> bool:
    """Whether `sid` can key a student (see STUDENT_ID)."""
    return (isinstance(sid, str) and STUDENT_ID.fullmatch(sid) is not None
            and unicodedata.is_normalized("NFC", sid))


class CourseError(UserError):
    """The course directory or its configuration is not usable."""


def _secret_temporary(path: Path) -> tuple[int, str]:
    """A new file beside `path`, readable by its owner only (mkstemp's 0600)."""
    import tempfile

    try:
        return tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise CourseError(f"{path}: the course's secret cannot be written "
                          f"({error.strerror})") from None


SECONDS = "a positive number of seconds"


class Autograder(Configurable):
    """The grader's own settings, `c.Autograder.*` in nbgrader_config.py (nbgrader ignores
    them)."""

    timeout = Float(DEFAULT_TIMEOUT, help="Seconds a whole notebook may run (wall clock); "
                                          "`grade --timeout` overrides it.").tag(
        config=True, wanted=SECONDS)
    locked_cell_timeout = Float(DEFAULT_LOCKED_CELL_TIMEOUT, help=(
        "Seconds one locked cell of the release may run.")).tag(config=True, wanted=SECONDS)
    probe_timeout = Float(DEFAULT_PROBE_TIMEOUT, help=(
        "Seconds one call of the student's code by a hidden test may run.")).tag(
        config=True, wanted=SECONDS)
    scheduler = Unicode(None, allow_none=True, help=(
        "A Dask scheduler's address (tcp://host:8786): grade there instead of on the local "
        "pool; `grade --scheduler` overrides it.")).tag(
        config=True, wanted="a Dask scheduler's address such as tcp://host:8786")

    @validate("timeout", "locked_cell_timeout", "probe_timeout")
    def _positive(self, proposal: Any) -> float:
        if not proposal["value"] > 0:  # NaN too
            raise TraitError(f"must be a positive number of seconds, got {proposal['value']!r}")
        return proposal["value"]


def _autograder_settings(config: Any, config_path: Path) -> Autograder:
    """The Autograder settings, or CourseError naming the one that is wrong (a typo'd name
    would otherwise be ignored without a word)."""
    from autograder.config_check import check_settings

    check_settings(Autograder, config.Autograder.items(), "c.Autograder.", config_path,
                   CourseError)
    return Autograder(config=config)


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
        settings = _autograder_settings(config, config_path)
        return cls(root=root, course_id=course_id, scheduler=settings.scheduler or None,
                   config=config, timeout=settings.timeout,
                   locked_cell_timeout=settings.locked_cell_timeout,
                   probe_timeout=settings.probe_timeout)

    def secret(self) -> bytes:
        """The course's secret (made on first use, readable by its owner only): with each
        notebook's hash it draws the inputs of the unseen tests. Never sent to a job."""
        path = self.root / SECRET_FILE
        if not path.exists():
            self._make_secret(path)
        secret = path.read_bytes()
        if len(secret) < 16:
            raise CourseError(f"{path} is too short to be the course's secret: delete it "
                              "to make a new one (students' unseen inputs change)")
        return secret

    @staticmethod
    def _make_secret(path: Path) -> None:
        """Written whole to a temporary file, then linked into place: a full disk must not
        leave a short secret that stops all grading, and link() fails if another process
        made it first (then theirs is the secret)."""
        fd, temporary = _secret_temporary(path)
        try:
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(32))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process won the race: read theirs
            except OSError as error:
                raise CourseError(f"{path}: the course's secret cannot be written "
                                  f"({error.strerror}): free some space in {path.parent} "
                                  "and try again") from None
        finally:
            os.unlink(temporary)

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
