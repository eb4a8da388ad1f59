"""lms.json: what an LMS download said about one stored submission (which LMS, the member's
name, the display name, the LMS's ids, its late flag and submission time), kept beside the
notebook in submitted/<student>/<assignment>/.

Signed with the course's secret: submitted/ also receives whatever a student's folder held
through nbgrader's exchange (`nbgrader submit` then `collect` copy every file), so a record
this grader did not write -- a planted "late": false, another student's Canvas ids to take
their feedback slot -- must count for nothing. The signature covers the student and the
assignment too, so a record is not valid in another student's folder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from autograder.errors import SubmissionError
from autograder.files import read_regular_file, write_atomic

if TYPE_CHECKING:
    from autograder.course import Course

LMS_FILE = "lms.json"
MAX_LMS_FILE_BYTES = 64 * 1024
FIELDS = ("lms", "file", "name", "user_id", "submission_id", "late", "submitted_at")
LMS_NAMES = ("canvas", "moodle", "blackboard", "named_regexp")

log = logging.getLogger(__name__)


def _signature(secret: bytes, student_id: str, assignment: str, record: dict[str, Any]) -> str:
    signed = json.dumps({"student": student_id, "assignment": assignment,
                         **{key: record.get(key) for key in FIELDS}},
                        sort_keys=True, ensure_ascii=False)
    return hmac.new(secret, signed.encode("utf-8"), hashlib.sha256).hexdigest()


def write_lms_record(course: Course, student_id: str, assignment: str,
                     record: dict[str, Any]) -> None:
    """Write (atomically, replacing a planted link) the signed record of one submission."""
    body = {key: record.get(key) for key in FIELDS}
    body["signature"] = _signature(course.secret(), student_id, assignment, body)
    write_atomic(course.submitted_dir(student_id, assignment) / LMS_FILE,
                 json.dumps(body, indent=1, ensure_ascii=False).encode("utf-8"))


def remove_lms_record(course: Course, student_id: str, assignment: str) -> None:
    (course.submitted_dir(student_id, assignment) / LMS_FILE).unlink(missing_ok=True)


def read_lms_record(course: Course, student_id: str, assignment: str) -> dict[str, Any] | None:
    """The record this grader wrote for the submission, or None: none there, unreadable, or
    not signed by this course (then it is logged and ignored, never trusted)."""
    path = course.submitted_dir(student_id, assignment) / LMS_FILE
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(read_regular_file(path, MAX_LMS_FILE_BYTES).decode("utf-8"))
    except (SubmissionError, ValueError):
        log.warning("%s is not a readable lms.json: ignored", path)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("signature"), str):
        log.warning("%s was not written by this grader (no signature): ignored", path)
        return None
    expected = _signature(course.secret(), student_id, assignment, data)
    if not hmac.compare_digest(expected, data["signature"]) \
            or data.get("lms") not in LMS_NAMES:
        log.warning("%s was not written by this grader (bad signature): ignored", path)
        return None
    return {key: data.get(key) for key in FIELDS}
