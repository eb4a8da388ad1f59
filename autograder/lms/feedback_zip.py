"""Every student's feedback in one zip, named as the LMS's bulk feedback upload matches it.

- **Canvas** (Assignment > "Re-upload submissions"): Canvas splits a file's name on `_` and
  takes its first two all-digit parts as the user id and the id of the file the student
  submitted (canvas-lms, Assignment#infer_comment_context_from_filename); the feedback is
  attached to that submission as a comment. So the downloaded name is kept, its extension
  replaced: `smithalice_10001_678901_backprop.ipynb` gives
  `smithalice_10001_678901_backprop_feedback.html`. Where the downloaded name does not carry
  the two ids first (renamed), the name is rebuilt as `<name>_<user id>_<file id>_feedback.html`.
- **Moodle** ("Upload multiple feedback files in a zip"): Moodle splits each path part on `_`:
  full name, participant id, plugin type and name
  (assignfeedback_file_zip_importer::is_valid_filename_for_import), so a folder per student,
  `<Full Name>_<participant id>_assignsubmission_file_/feedback.html`, with no `_` in the name.
- **nbgrader layout** (no lms.json, or Blackboard, which has no bulk feedback-file upload):
  `<student>/<assignment>/feedback.html`.

The LMS and ids come from `submitted/<student>/<assignment>/lms.json` (written when the download
was read). Each student's feedback is rendered afresh from their stored result and their final
score in gradebook.db (a TA's manual grades and extra credit, the late penalty, entered after
grading) and written to `feedback/<student>/<assignment>/<notebook>.html` and `.md` too, so the
files and the zip agree with the gradebook exports; a feedback page with no stored result
behind it is left out, never sent with a score nobody checked. Names are built
only from cleaned, path-safe parts (letters, digits, `-`, `.`, space; no `/`, `..` or control
character). A student whose files are unusable is left out and listed with the reason. With no
feedback at all (nothing graded yet) no zip is written: the command fails, saying so.
"""

from __future__ import annotations

import io
import os
import re
import stat
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from autograder.errors import SubmissionError
from autograder.export import ExportError
from autograder.files import read_regular_file, write_atomic
from autograder.lms.record import read_lms_record
from autograder.results import clean_text
from autograder.submissions import Skipped

if TYPE_CHECKING:
    from autograder.course import Course

MAX_FEEDBACK_BYTES = 5 * 1024 * 1024  # one student's feedback page
_DIGITS = re.compile(r"[0-9]+")


def safe_part(text: object, cap: int = 80) -> str:
    """`text` as one path-safe name part: cleaned; only letters, digits, `-`, `.` and spaces
    (anything else, `_` `/` `\\` included, becomes `-`); no run of dots, no leading or trailing
    dot, dash or space; at most `cap` characters; never empty."""
    text = clean_text(text, cap * 4)
    text = "".join(ch if ch.isalnum() or ch in "-. " else "-" for ch in text)
    text = re.sub(r"\.{2,}", ".", " ".join(text.split())).strip(" .-")
    return text[:cap].strip(" .-") or "-"


def canvas_name(meta: dict[str, Any], student: str) -> str:
    """The name Canvas's "Re-upload submissions" matches to this student's submission."""
    user_id = str(meta.get("user_id") or student)
    file_id = str(meta.get("submission_id") or "")
    if not _DIGITS.fullmatch(user_id):
        raise ValueError(f"the Canvas user id {clean_text(user_id, 50)!r} is not a number")
    if not _DIGITS.fullmatch(file_id):
        raise ValueError("lms.json has no Canvas file id (the second number of the downloaded "
                         "file's name), which Canvas needs to match the feedback")
    downloaded = re.split(r"[/\\]", str(meta.get("file") or ""))[-1]
    stem = downloaded.rsplit(".", 1)[0] if "." in downloaded else downloaded
    parts = [safe_part(part) for part in stem.split("_") if part]
    numbers = [part for part in parts if _DIGITS.fullmatch(part)]
    if numbers[:2] == [user_id, file_id]:
        return "_".join(parts) + "_feedback.html"
    name = safe_part(meta.get("name") or "student").replace(" ", "")
    if _DIGITS.fullmatch(name):
        name = "student"  # an all-digit name would be taken for the user id
    return f"{name}_{user_id}_{file_id}_feedback.html"


def moodle_name(meta: dict[str, Any], student: str) -> str:
    """`<Full Name>_<participant id>_assignsubmission_file_/feedback.html`."""
    participant = str(meta.get("user_id") or student)
    if not _DIGITS.fullmatch(participant):
        raise ValueError(f"the Moodle participant id {clean_text(participant, 50)!r} is not a "
                         "number")
    name = safe_part(meta.get("name") or "Participant")
    return f"{name}_{participant}_assignsubmission_file_/feedback.html"


def nbgrader_name(student: str, assignment: str) -> str:
    return f"{safe_part(student, 100)}/{safe_part(assignment, 100)}/feedback.html"


def render_all_feedback(course: Course, assignment: str) -> tuple[set[str], list[Skipped]]:
    """Every stored result's feedback written again with the student's final score (see the
    module's docstring): the students rendered, and those left out with the reason."""
    from autograder.feedback import write_feedback
    from autograder.results import cleaned
    from autograder.scores import final_scores
    from autograder.store import result_store

    results, unreadable = result_store(course).load_readable(assignment)
    skipped = [Skipped("a stored result", clean_text(problem, 500)) for problem in unreadable]
    finals = {row.student_id: row for row in final_scores(course, assignment, results)}
    rendered = set()
    for result in results:
        cleaned(result)  # whoever wrote it: nothing raw reaches a student
        try:
            write_feedback(result, course.feedback_dir(result.student_id, assignment),
                           finals.get(result.student_id))
        except OSError as error:  # this student alone
            skipped.append(Skipped(clean_text(result.student_id, 100),
                                   f"feedback not written: {clean_text(error, 300)}"))
            continue
        rendered.add(result.student_id)
    return rendered, skipped


def feedback_members(course: Course, assignment: str, notebook: str,
                     rendered: set[str] | None = None) -> tuple[dict[str, Path], list[Skipped]]:
    """{name in the zip: feedback file}, and the students left out with the reason. With
    `rendered`, only those students' feedback (just rendered from their results) is taken."""
    members: dict[str, Path] = {}
    skipped: list[Skipped] = []
    root = course.root / "feedback"
    try:
        students = sorted(entry.name for entry in os.scandir(root)
                          if entry.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        students = []
    for student in students:
        page = course.feedback_dir(student, assignment) / f"{notebook}.html"
        if not os.path.lexists(page):
            continue  # no feedback for this assignment
        shown = clean_text(student, 100)
        if rendered is not None and student not in rendered:
            skipped.append(Skipped(shown, "no stored result of this grader to render its "
                                          "feedback from (grade them): left out"))
            continue
        try:
            meta = _lms_meta(course, student, assignment)
            lms = meta.get("lms") if meta else None
            if lms == "canvas":
                name = canvas_name(meta, student)
            elif lms == "moodle":
                name = moodle_name(meta, student)
            else:
                name = nbgrader_name(student, assignment)
            _check_regular(page)
        except (ValueError, SubmissionError) as error:
            skipped.append(Skipped(shown, clean_text(error, 500)))
            continue
        if name in members:
            skipped.append(Skipped(shown, f"its feedback would be named {name}, as another "
                                          "student's: left out"))
            continue
        members[name] = page
    return members, skipped


def write_feedback_zip(course: Course, assignment: str, output: Path | None = None,
                       out: TextIO | None = None) -> Path:
    """The zip for the LMS's bulk feedback upload (exports/<assignment>-feedback.zip by
    default), each student's feedback rendered afresh (and written under feedback/ too), the
    zip written atomically; the students left out are printed to `out`. Holds the course's
    grading lock: a grade run writes the same feedback files."""
    from autograder.assignment import Assignment
    from autograder.lock import course_lock

    notebook = Assignment.load(course, assignment).notebook_name
    with course_lock(course.root):
        rendered, not_rendered = render_all_feedback(course, assignment)
        members, skipped = feedback_members(course, assignment, notebook, rendered)
        skipped = not_rendered + skipped
        return _write_zip(course, assignment, members, skipped, output, out)


def _write_zip(course: Course, assignment: str, members: dict[str, Path],
               skipped: list[Skipped], output: Path | None, out: TextIO | None) -> Path:
    if not members:  # an empty zip uploaded to the LMS would say nothing to anyone
        if skipped:
            raise ExportError("no feedback to zip: every student's was left out: "
                              + "; ".join(str(item) for item in skipped[:20]))
        raise ExportError(f"no feedback to zip: grade the assignment first (`autograder grade "
                          f"{clean_text(assignment, 100)}`)")
    path = output or course.exports_dir() / f"{assignment}-feedback.zip"
    buffer = io.BytesIO()
    stamp, written = time.localtime()[:6], 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, page in sorted(members.items()):
            try:
                data = read_regular_file(page, MAX_FEEDBACK_BYTES)
            except SubmissionError as error:  # changed since it was listed
                skipped.append(Skipped(name, clean_text(error, 500)))
                continue
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
            written += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    if out is not None:
        print(f"{written} feedback file(s) in the zip", file=out)
        for item in skipped:
            print(f"skipped: {item}", file=out)
    return path


def _lms_meta(course: Course, student: str, assignment: str) -> dict[str, Any] | None:
    """The signed lms.json (autograder/lms/record.py), or None where the submission has none
    this grader wrote (an nbgrader-layout submission: named as nbgrader lays it out)."""
    meta = read_lms_record(course, student, assignment)
    if meta is None or meta.get("lms") not in ("canvas", "moodle", "blackboard"):
        return None
    return meta


def _check_regular(page: Path) -> None:
    mode = os.lstat(page).st_mode
    if not stat.S_ISREG(mode):
        raise SubmissionError(f"{clean_text(page, 300)} is not a regular file: not read")
