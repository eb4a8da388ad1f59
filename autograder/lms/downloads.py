"""Whose each file of an LMS download is: Canvas, Moodle and Blackboard name the files of
their bulk downloads after the student, and this module reads those names (and nothing else:
it never opens a file). `autograder.submissions` does the reading, storing and skipping.

Students are keyed by the LMS's id (Canvas user id, Moodle participant id, Blackboard
username), never by the display name in a file name, which only travels along for people to
read. The shapes are recognised automatically; an instructor whose LMS names files otherwise
sets nbgrader's own `c.FileNameCollectorPlugin.named_regexp` (and `valid_ext`), which then
decides alone. Times in a download are the LMS server's local time: `c.LmsDownload.timezone`
says which zone that is. Canvas's member times are not submission times: Canvas builds its zip
without setting them (lib/content_zipper.rb), so each carries the time the zip was made; a
Canvas submission's lateness is its `LATE` flag (`c.LatePolicy.lms_flag_rule`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from traitlets import TraitError, Unicode, validate
from traitlets.config import Configurable

from autograder.errors import UserError

CANVAS, MOODLE, BLACKBOARD = "canvas", "moodle", "blackboard"
NBGRADER = "nbgrader"  # <student>/<assignment>/<notebook>.ipynb, as nbgrader's submitted/
NAMED_REGEXP = "named_regexp"  # the instructor's c.FileNameCollectorPlugin.named_regexp
LMS_NAMES = (CANVAS, MOODLE, BLACKBOARD)  # tried in this order; a tie goes to the first

LABELS = {
    CANVAS: "a Canvas download (<sortable name>_[LATE_]<user id>_<submission id>_<file>)",
    MOODLE: "a Moodle download (<full name>_<participant id>_assignsubmission_file_/<file>)",
    BLACKBOARD: "a Blackboard download (<assignment>_<username>_attempt_<time>_<file>)",
    NBGRADER: "nbgrader's layout (<student id>/<assignment>/<notebook>.ipynb)",
    NAMED_REGEXP: "named by c.FileNameCollectorPlugin.named_regexp",
}

# Canvas: "<sortablename>_[LATE_]<user id>_<submission id>_<original name>", flat; the
# sortable name is lower-case letters in practice, but any text is taken (it is never a key).
_CANVAS = re.compile(r"^(?P<name>.+?)(?:_(?P<late>late))?_(?P<student_id>\d{1,20})_"
                     r"(?P<submission_id>\d{1,20})_(?P<file_id>.+)$", re.IGNORECASE)
# Moodle: "<Full Name>_<participant id>_assignsubmission_<plugin>_/<file>" (or, with
# "download submissions in folders" off, "..._assignsubmission_<plugin>_<file>"). The first
# component that reads so is Moodle's: a folder the student made inside theirs is not.
_MOODLE = re.compile(r"^(?:[^/]*/)*?(?P<name>[^/]+?)_(?P<student_id>\d{1,20})_assignsubmission_"
                     r"(?P<plugin>[a-z]+)_/?(?P<file_id>[^/].*)$")
# Blackboard: "<Assignment>_<username>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file>", and one
# "<Assignment>_<username>_attempt_<stamp>.txt" per attempt describing it.
_STAMP = r"\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d"
_BLACKBOARD = re.compile(r"^(?P<assignment>.+?)_(?P<student_id>[^_]+)_attempt_"
                         rf"(?P<timestamp>{_STAMP})"
                         r"(?:_(?P<file_id>.+)|(?P<record>\.txt))$")
_CANVAS_RESUBMISSION = re.compile(r"-(\d{1,6})(?:\.[^.]*)?$")  # backprop-1.ipynb: Canvas's suffix
# What the LMS wrote sits between two things a student can choose: the display name before it
# and the student's own file name after it. A name that reads as another student's ids in
# either place ("x_10002_999_y_10003_888_backprop.ipynb") can be read two ways: such a member
# is nobody's until the instructor renames it, never the other student's.
_CANVAS_IDS = re.compile(r"(?=_(?:late_)?(\d{1,20})_\d{1,20}_.)", re.IGNORECASE)
_MOODLE_IDS = re.compile(r"_(\d{1,20})_assignsubmission_")
_BLACKBOARD_ATTEMPTS = re.compile(rf"_attempt_{_STAMP}")


class AmbiguousName(ValueError):
    """A member's name reads as more than one student's; the message says how to fix it."""


_BLACKBOARD_NAME = re.compile(r"^Name:\s*(?P<name>.*?)\s*\((?P<username>[^()]*)\)\s*$",
                              re.MULTILINE)

DEFAULT_VALID_EXT = (".ipynb",)  # nbgrader's FileNameCollectorPlugin.valid_ext default


class DownloadSettingsError(UserError, ValueError):
    """A setting that reads downloads is unusable; the message names it."""


class LmsDownload(Configurable):
    """How LMS downloads are read (`c.LmsDownload.*` in nbgrader_config.py)."""

    timezone = Unicode(
        "UTC",
        help="The time zone of the LMS server, as an IANA name (e.g. 'America/Toronto'): the "
             "times in its downloads (Moodle's zip member times, Blackboard's attempt stamps) "
             "are its local time, converted from this zone to UTC. Canvas's member times are "
             "the time its zip was made and are not read.").tag(config=True)

    @validate("timezone")
    def _known_zone(self, proposal: dict[str, Any]) -> str:
        zone_name(proposal["value"])
        return proposal["value"]


def zone_name(name: str) -> ZoneInfo:
    """The zone called `name`, or DownloadSettingsError naming the setting."""
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise DownloadSettingsError(
            f"c.LmsDownload.timezone = {str(name)[:80]!r} is not a known time zone (use an "
            "IANA name such as 'UTC' or 'America/Toronto')") from None


@dataclass(frozen=True)
class Reading:
    """The settings a download is read with."""

    zone: ZoneInfo
    pattern: re.Pattern[str] | None  # the instructor's named_regexp, if set
    valid_ext: tuple[str, ...]  # what counts as a submitted notebook
    zone_set: bool = True  # False: c.LmsDownload.timezone was left at its default, UTC

    def zone_note(self) -> str:
        """How the download's times are read, for the line that says what it was read as."""
        if not self.zone_set:
            return "times read as UTC (c.LmsDownload.timezone not set)"
        return f"times read in {self.zone.key}"

    def is_notebook(self, file_name: str) -> bool:
        return any(file_name.lower().endswith(ext.lower()) for ext in self.valid_ext)

    def to_utc(self, local: datetime) -> datetime | None:
        """A time read from the download in UTC; a naive one is the LMS server's local time.
        None if it has no place in UTC (year 1 in a zone east of Greenwich, say)."""
        if local.tzinfo is None:
            local = local.replace(tzinfo=self.zone)
        try:
            return local.astimezone(UTC)
        except (OverflowError, ValueError):
            return None


def reading(config: Any) -> Reading:
    """The download settings of a course's traitlets Config. nbgrader's own
    FileNameCollectorPlugin settings are read from the Config, not through nbgrader's class
    (importing nbgrader costs 1.3 s a run); test_lms_downloads checks both read the same."""
    try:
        zone = zone_name(LmsDownload(config=config).timezone)
    except TraitError as error:  # raised by the validator above, wrapped by traitlets
        raise DownloadSettingsError(str(error)) from None
    zone_set = config is not None and "timezone" in config.LmsDownload
    section = config.FileNameCollectorPlugin if config is not None else {}
    regexp = section.get("named_regexp", "") or ""
    pattern = None
    if regexp:
        try:
            pattern = re.compile(str(regexp))
        except re.error as error:
            raise DownloadSettingsError(
                f"c.FileNameCollectorPlugin.named_regexp is not a regular expression: "
                f"{error}") from None
        if "student_id" not in pattern.groupindex:
            raise DownloadSettingsError("c.FileNameCollectorPlugin.named_regexp has no "
                                        "(?P<student_id>...) group: whose a file is cannot be "
                                        "read from its name")
    valid_ext = section.get("valid_ext", list(DEFAULT_VALID_EXT))
    if (not isinstance(valid_ext, list | tuple) or not valid_ext
            or not all(isinstance(ext, str) and ext.startswith(".") for ext in valid_ext)):
        raise DownloadSettingsError("c.FileNameCollectorPlugin.valid_ext must be a list of "
                                    f"extensions such as ['.ipynb'], got {valid_ext!r:.80}")
    return Reading(zone, pattern, tuple(valid_ext), zone_set)


@dataclass(frozen=True)
class Owner:
    """What a member's path says about it."""

    lms: str  # one of CANVAS, MOODLE, BLACKBOARD, NBGRADER, NAMED_REGEXP
    student_id: str  # the key: the LMS id, or nbgrader's folder name
    file: str  # the student's own file name
    name: str | None = None  # the display name in the file name: for people, never a key
    late: bool = False  # Canvas's LATE
    submission_id: str | None = None  # Canvas's second number
    stamp: datetime | None = None  # a submission time in the name (LMS local time, naive)
    record: bool = False  # a Blackboard attempt's description (.txt), not a submission
    resubmission: int = 0  # Canvas's -N suffix: a later file of the same name
    folder: str = ""  # nbgrader layout: the student's folder in the download


def detect(paths: list[str], assignment: str) -> str:
    """The shape of a download: the LMS whose names at least half of its files carry (the
    most, on a tie the first of Canvas, Moodle, Blackboard), else nbgrader's layout."""
    counts = Counter(lms for path in paths for lms in LMS_NAMES
                     if _recognised(path, lms, assignment))
    if counts:
        lms, count = max(counts.items(), key=lambda item: (item[1], -LMS_NAMES.index(item[0])))
        if 2 * count >= len(paths):
            return lms
    return NBGRADER


def _recognised(path: str, shape: str, assignment: str) -> bool:
    try:
        return recognise(path, shape, assignment) is not None
    except AmbiguousName:
        return True  # named as that LMS names files, if two ways


def recognise(path: str, shape: str, assignment: str,
              pattern: re.Pattern[str] | None = None) -> Owner | None:
    """Whose the member at `path` (a relative POSIX path in the download) is, read as
    `shape` names files; None if its name is not one that shape gives; AmbiguousName if it
    reads as more than one student's."""
    parts = PurePosixPath(path).parts
    if not parts:
        return None
    base = parts[-1]
    if shape == CANVAS:
        match = _CANVAS.match(base)  # flat; a folder around it (re-zipped) is ignored
        if not match:
            return None
        _one_reading(CANVAS, {found[1] for found in _CANVAS_IDS.finditer(base)})
        resubmission = _CANVAS_RESUBMISSION.search(match["file_id"])
        return Owner(CANVAS, match["student_id"], match["file_id"], match["name"],
                     late=match["late"] is not None, submission_id=match["submission_id"],
                     resubmission=int(resubmission[1]) if resubmission else 0)
    if shape == MOODLE:
        match = _MOODLE.match(path)
        if not match:
            return None
        moodles_part = path[:match.start("file_id")]
        _one_reading(MOODLE, {found[1] for found in _MOODLE_IDS.finditer(moodles_part)})
        return Owner(MOODLE, match["student_id"], PurePosixPath(match["file_id"]).name,
                     match["name"])
    if shape == BLACKBOARD:
        match = _BLACKBOARD.match(base)
        if not match:
            return None
        if len(_BLACKBOARD_ATTEMPTS.findall(base)) > 1:
            raise AmbiguousName(_rename_hint(BLACKBOARD, "attempts"))
        stamp = _blackboard_stamp(match["timestamp"])
        if stamp is None:
            return None
        return Owner(BLACKBOARD, match["student_id"], match["file_id"] or base,
                     stamp=stamp, record=match["record"] is not None)
    if shape == NAMED_REGEXP:
        return _by_pattern(path, pattern) if pattern is not None else None
    if shape == NBGRADER:
        # <student>/<assignment>/<file>, <student>/<file>, under any wrapping folders.
        folders = list(parts[:-1])
        if folders and folders[-1] == assignment and len(folders) > 1:
            folders.pop()
        if not folders:
            return None  # a file at the top: whose it is cannot be known
        return Owner(NBGRADER, folders[-1], base, folder="/".join(parts[:-1]))
    raise ValueError(f"unknown download shape {shape!r}")


def _one_reading(lms: str, ids: set[str]) -> None:
    if len(ids) > 1:
        raise AmbiguousName(_rename_hint(lms, f"ids {', '.join(sorted(ids))}"))


def _rename_hint(lms: str, what: str) -> str:
    return (f"its name reads as more than one student's in {lms.capitalize()}'s naming "
            f"({what}): not graded, so that nobody's work is filed as another's; rename it "
            "as the LMS named it and grade it again")


def _by_pattern(path: str, pattern: re.Pattern[str]) -> Owner | None:
    # As nbgrader's FileNameCollectorPlugin: re.match against the path (here, in the zip).
    match = pattern.match(path)
    if not match or not match["student_id"]:
        return None
    groups = match.groupdict()
    stamp = None
    if groups.get("timestamp"):
        # Blackboard's stamp (nbgrader's own example), else whatever dateutil reads.
        stamp = _blackboard_stamp(groups["timestamp"])
        if stamp is None:
            from dateutil.parser import ParserError, parse

            try:
                stamp = parse(groups["timestamp"])
            except (ParserError, ValueError, OverflowError):
                stamp = None
    late = str(groups.get("late") or "").strip().lower() not in ("", "0", "false", "no")
    return Owner(NAMED_REGEXP, match["student_id"],
                 groups.get("file_id") or PurePosixPath(path).name,
                 groups.get("name"), late=late, submission_id=groups.get("submission_id"),
                 stamp=stamp)


def _blackboard_stamp(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%d-%H-%M-%S")
    except ValueError:  # e.g. a 13th month
        return None


def blackboard_head(base: str) -> str | None:
    """"<Assignment>_<username>" of a Blackboard file name: all before its first
    "_attempt_<stamp>"; None if it has none."""
    found = _BLACKBOARD_ATTEMPTS.search(base)
    return base[:found.start()] if found else None


def blackboard_assignment(heads: set[str]) -> str | None:
    """The assignment's part of Blackboard's names, where several students' names show it:
    their longest common prefix up to an underscore ("Week_3_Backprop" of "Week_3_Backprop_
    asmith" and "Week_3_Backprop_john_doe"); None from fewer than two names."""
    if len(heads) < 2:
        return None
    common = os.path.commonprefix(sorted(heads))
    cut = common.rfind("_")
    return common[:cut] if cut > 0 else None


def blackboard_record(text: str) -> tuple[str | None, str | None]:
    """(display name, username) from a Blackboard attempt's .txt ("Name: Alice Smith
    (asmith)"); None for what it does not say."""
    match = _BLACKBOARD_NAME.search(text)
    if not match:
        return None, None
    return match["name"] or None, match["username"] or None
