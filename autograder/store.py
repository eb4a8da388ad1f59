"""Where grading results are kept: one result per student and assignment, behind a small
interface, so that a database can take the files' place (the service) without the commands
changing.

They are not kept under `autograded/`: nbgrader owns that folder, and its `autograde --force`
(formgrader's Autograde button) deletes `autograded/<student>/<assignment>/` whole. The file
store keeps them at `<course>/results/<assignment>/<student>.json` instead; a result an older
version left at `autograded/<student>/<assignment>/results.json` is moved there the first
time the assignment's results are read.
"""

from __future__ import annotations

import json
import logging
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from autograder.course import usable_student_id
from autograder.errors import SubmissionError, UserError
from autograder.files import read_regular_file, write_atomic
from autograder.results import SubmissionResult, cleaned

if TYPE_CHECKING:
    from autograder.course import Course

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
LEGACY_FILE = "results.json"  # autograded/<student>/<assignment>/results.json, before the store
MAX_RESULT_BYTES = 64 * 1024 * 1024  # a result holds capped text and the drawn inputs: far less
# An assignment key is one path component: nothing that could climb out of the store's
# folder, hide (a leading dot) or be read as an option. Student keys follow the ids that
# collecting accepts (autograder.course.STUDENT_ID), which have the same properties.
_ASSIGNMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")


class StoreError(UserError):
    """A stored result cannot be read or written; the message names it and says why."""


class ResultStore(ABC):
    """One result per (assignment, student): the last one saved."""

    @abstractmethod
    def load(self, assignment: str, student: str) -> SubmissionResult | None:
        """The student's stored result, or None if there is none. Raises StoreError if it
        cannot be read."""

    @abstractmethod
    def load_all(self, assignment: str) -> list[SubmissionResult]:
        """Every stored result of the assignment, by student. Raises StoreError naming every
        one that cannot be read (none is silently left out: that student would vanish from
        the exports)."""

    @abstractmethod
    def save(self, result: SubmissionResult) -> None:
        """Keep `result` (for `result.assignment`, `result.student_id`), atomically: a reader
        sees the old result or the new one, never half of one."""

    @abstractmethod
    def remove(self, assignment: str, student: str) -> None:
        """Forget the student's result (nothing happens if there is none)."""


def check_key(kind: str, key: str) -> str:
    """`key` if it can name a stored result's file; else StoreError."""
    usable = (usable_student_id(key) if kind == "student"
              else isinstance(key, str) and _ASSIGNMENT.fullmatch(key) is not None)
    if not usable or key in (".", ".."):
        raise StoreError(f"{kind} {key!r} cannot key a stored result: one name of letters, "
                         "digits and . _ @ + - is expected")
    return key


class FileResultStore(ResultStore):
    """`<course>/results/<assignment>/<student>.json` (git-ignored, like autograded/)."""

    def __init__(self, course: Course | Path) -> None:
        # (a Path has a `root` too: "/")
        self.root = Path(course) if isinstance(course, str | os.PathLike) else course.root

    def folder(self, assignment: str) -> Path:
        return self.root / RESULTS_DIR / check_key("assignment", assignment)

    def path(self, assignment: str, student: str) -> Path:
        """The file that holds (or would hold) the student's result."""
        return self.folder(assignment) / f"{check_key('student', student)}.json"

    def load(self, assignment: str, student: str) -> SubmissionResult | None:
        self._migrate(assignment)
        path = self.path(assignment, student)
        return self._read(path) if os.path.lexists(path) else None

    def load_all(self, assignment: str) -> list[SubmissionResult]:
        results, problems = self.load_readable(assignment)
        if problems:
            raise StoreError("stored results that cannot be read (delete them and grade "
                             "those students again): " + "; ".join(problems))
        return results

    def load_readable(self, assignment: str) -> tuple[list[SubmissionResult], list[str]]:
        """Every readable result, and a line for each stored result that is not (for a
        caller that can do without it, e.g. grading, which grades that student again)."""
        self._migrate(assignment)
        folder = self.folder(assignment)
        results, problems = [], []
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for path in paths:
            try:
                results.append(self._read(path))
            except StoreError as error:
                problems.append(str(error))
        return results, problems

    def save(self, result: SubmissionResult) -> None:
        self._write(self.path(result.assignment, result.student_id), result)

    def remove(self, assignment: str, student: str) -> None:
        self.path(assignment, student).unlink(missing_ok=True)

    def _write(self, path: Path, result: SubmissionResult) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, result.to_json().encode("utf-8"))

    def _read(self, path: Path) -> SubmissionResult:
        try:
            data = json.loads(read_regular_file(path, MAX_RESULT_BYTES).decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            # Cleaned again: a result stored by an older version may hold raw student text.
            return cleaned(SubmissionResult.from_dict(data))
        except SubmissionError as error:
            raise StoreError(str(error)) from None
        except (ValueError, TypeError, KeyError) as error:  # JSONDecodeError is a ValueError
            raise StoreError(f"{path} is not a stored result ({type(error).__name__})") from None

    def _migrate(self, assignment: str) -> None:
        """Move what an older version kept under autograded/ into the store, once. The
        folder's name is the student's key (as it was the result's place). A result already
        in the store is newer than one nbgrader's folder still holds: the old one goes."""
        check_key("assignment", assignment)  # it is part of a glob pattern
        for old in sorted((self.root / "autograded").glob(f"*/{assignment}/{LEGACY_FILE}")):
            student = old.parent.parent.name
            try:
                new = self.path(assignment, student)
            except StoreError:
                log.warning("not moved into the store (unusable student folder): %s", old)
                continue
            if not os.path.lexists(new):
                try:
                    self._write(new, self._read(old))
                except StoreError as error:
                    log.warning("not moved into the store: %s", error)
                    continue
            old.unlink(missing_ok=True)


def result_store(course: Course | Path) -> ResultStore:
    """The course's result store (files today; the service will pass its database's)."""
    return FileResultStore(course)


def load_results(root: Path | Course, assignment: str) -> list[SubmissionResult]:
    """Every stored result of an assignment, cleaned, from the course's result store (one an
    older version kept under autograded/ is moved here first). Raises StoreError naming any
    that cannot be read."""
    return result_store(root).load_all(assignment)
