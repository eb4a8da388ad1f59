"""Canvas, Moodle and Blackboard downloads as the LMSs make them (issue 8, items 1 and 2):
students keyed by the LMS's id, the late flag and submission time kept (converted from the LMS
server's zone), and one bad file costing its student alone, listed with its reason.

The zips are built here in the LMSs' real shapes from the solution and from broken notebooks,
and graded for real (`commands.grade`, the sandbox, gradebook.db) on a private course whose
LMS server is in Toronto (UTC-5 in November)."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder import commands
from autograder.author import with_answers
from autograder.course import Course
from autograder.errors import SubmissionError
from autograder.lms import downloads
from autograder.lms.record import read_lms_record
from autograder.submissions import MAX_NOTEBOOK_BYTES, collect, submitted_in_course
from tests.conftest import make_course, run_nbgrader, write_submissions

ZONE = "America/Toronto"
NOON = (2026, 11, 20, 12, 0, 0)  # the LMS server's clock: 17:00 UTC
NOON_UTC = "2026-11-20T17:00:00+00:00"


@pytest.fixture(scope="module")
def lms_course(tmp_path_factory: pytest.TempPathFactory) -> Course:
    root = tmp_path_factory.mktemp("lms") / "course"
    root.mkdir()
    make_course(root)
    with open(root / "nbgrader_config.py", "a") as config:
        config.write(f"\nc.LmsDownload.timezone = {ZONE!r}\n")
    return Course.load(root)


@pytest.fixture(scope="module")
def notebooks(lms_course: Course, solution: dict[str, str]) -> dict[str, str]:
    """The solution (10/10), the blank release (0/10) and a broken one (train_step never
    steps: parts 1 and 2 only)."""
    release = nbformat.read(lms_course.release_dir("backprop") / "backprop.ipynb",
                            as_version=4)
    broken = dict(solution, train_step=solution["train_step"].replace(
        "optimizer.step()", "pass"))
    return {"solved": nbformat.writes(with_answers(release, solution)),
            "blank": nbformat.writes(release),
            "broken": nbformat.writes(with_answers(release, broken))}


def write_zip(path: Path, members: dict[str, str | bytes | tuple[tuple, str | bytes]]) -> Path:
    """A zip of {member: content or (member time, content)}, stored as the LMSs store them."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in members.items():
            when, content = value if isinstance(value, tuple) else (NOON, value)
            archive.writestr(zipfile.ZipInfo(name, date_time=when), content)
    return path


def grade(course: Course, source: Path, **options) -> tuple[dict, list[str], str]:
    out = io.StringIO()
    results = commands.grade(course, "backprop", source, out=out, workers=2, **options)
    text = out.getvalue()
    skipped = [line.removeprefix("skipped: ") for line in text.splitlines()
               if line.startswith("skipped: ")]
    return {r.student_id: r for r in results}, skipped, text


def lms_json(course: Course, student: str) -> dict:
    """The record as the grader reads it back (signed by the course: autograder/lms/record.py)."""
    record = read_lms_record(course, student, "backprop")
    assert record is not None, f"no lms.json signed by this course for {student}"
    return record


def reason_of(skipped: list[str], item: str) -> str:
    found = [line for line in skipped if line.startswith(f"{item}: ")]
    assert len(found) == 1, (item, skipped)
    return found[0].removeprefix(f"{item}: ")


def test_a_canvas_zip_with_every_bad_case_grades_every_good_student(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    solved, broken = notebooks["solved"], notebooks["broken"]
    download = write_zip(tmp_path / "submissions.zip", {
        "smithalice_10001_678901_backprop.ipynb": solved,
        # Two students whose name parts are equal: two ids, two students.
        "smithjohn_10010_678902_backprop.ipynb": broken,
        "smithjohn_LATE_10011_678905_backprop-1.ipynb": solved,
        # One student, two files: the later submission (higher id, -1 suffix) wins.
        "doebob_10020_678910_backprop.ipynb": ((2026, 11, 19, 9, 0, 0), solved),
        "doebob_10020_678920_backprop-1.ipynb": ((2026, 11, 20, 9, 30, 0), broken),
        "müllerjosé_10030_678930_backprop.ipynb": solved,  # an accented name
        "bigcarl_10040_678940_backprop.ipynb": b" " * (MAX_NOTEBOOK_BYTES + 1),
        "pdfdana_10050_678950_report.pdf": b"%PDF-1.4 not a notebook",
        "pyeve_10060_678960_backprop.py": b"def chain_rule(): pass\n",
        "pyeve_10060_678961_backprop.ipynb": solved,
        "__MACOSX/._smithalice_10001_678901_backprop.ipynb": b"\x00\x05\x16\x07",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "Frank Doe_555_assignsubmission_file_/backprop.ipynb": solved,  # not Canvas's shape
    })
    results, skipped, out = grade(lms_course, download)

    assert "submissions.zip: read as a Canvas download" in out
    assert {sid: (r.status, r.score) for sid, r in results.items()} == {
        "10001": ("graded", 10), "10010": ("graded", 6), "10011": ("graded", 10),
        "10020": ("graded", 6), "10030": ("graded", 10),
        "10050": ("invalid", 0), "10060": ("graded", 10)}
    assert results["10050"].reason == "no notebook was submitted (found: report.pdf)"
    zip_ = "submissions.zip:"
    assert reason_of(skipped, f"{zip_}doebob_10020_678910_backprop.ipynb") == (
        f"older submission of '10020' superseded by {zip_}doebob_10020_678920_backprop-1.ipynb")
    assert "larger than 20971520 bytes" in reason_of(
        skipped, f"{zip_}bigcarl_10040_678940_backprop.ipynb")
    assert reason_of(skipped, f"{zip_}pdfdana_10050_678950_report.pdf") == (
        "not a notebook (only .ipynb files are graded): '10050' has no notebook in this "
        "download")
    assert reason_of(skipped, f"{zip_}pyeve_10060_678960_backprop.py") == (
        f"not a notebook (only .ipynb files are graded): {zip_}"
        "pyeve_10060_678961_backprop.ipynb is graded instead")
    assert reason_of(skipped, "submissions.zip") == (
        "2 archiver metadata member(s) (__MACOSX/, dot files): not submissions")
    assert reason_of(skipped, f"{zip_}Frank Doe_555_assignsubmission_file_/backprop.ipynb") \
        .startswith("not named as the rest of the zip (a Canvas download")
    assert len(skipped) == 6  # and nothing else
    assert not lms_course.submitted_dir("10040", "backprop").exists()

    # Keys and late flags as the download gave them. Canvas's member times are the time its
    # zip was made, not submission times: no time is kept, lateness is the LATE flag.
    assert "its file times are the zip's, not submission times" in out
    assert lms_json(lms_course, "10011") == {
        "lms": "canvas", "file": "smithjohn_LATE_10011_678905_backprop-1.ipynb",
        "name": "smithjohn", "user_id": "10011", "submission_id": "678905", "late": True,
        "submitted_at": None}
    assert lms_json(lms_course, "10010")["late"] is False
    assert {sid for sid, r in results.items() if r.lms_late} == {"10011"}
    assert lms_json(lms_course, "10030")["name"] == "müllerjosé"
    assert lms_json(lms_course, "10020")["submitted_at"] is None
    assert results["10001"].timestamp is None
    # As nbgrader's zip_collect: a timestamp.txt only from a time the download states.
    assert not (lms_course.submitted_dir("10001", "backprop") / "timestamp.txt").exists()
    assert lms_json(lms_course, "10050")["file"] == "pdfdana_10050_678950_report.pdf"
    assert not (lms_course.submitted_dir("10050", "backprop") / "backprop.ipynb").exists()
    # Each student's row in nbgrader's gradebook is keyed by the Canvas id.
    with Gradebook(lms_course.db_url) as gradebook:
        ids = {s.student.id for s in gradebook.assignment_submissions("backprop")}
    assert set(results) <= ids and not ids & {"smithalice", "smithjohn", "doebob"}


def test_a_moodle_zip_is_keyed_by_participant_id(lms_course: Course, notebooks: dict[str, str],
                                                  tmp_path: Path) -> None:
    download = write_zip(tmp_path / "moodle.zip", {
        "Alice Smith_12345_assignsubmission_file_/backprop.ipynb": notebooks["solved"],
        "Alice Smith_12345_assignsubmission_onlinetext_/onlinetext.html": "<p>done</p>",
        "Zoë Ångström_12346_assignsubmission_file_/My Work/backprop.ipynb": notebooks["broken"],
    })
    results, skipped, out = grade(lms_course, download)
    assert "moodle.zip: read as a Moodle download" in out
    assert {sid: r.score for sid, r in results.items()} == {"12345": 10, "12346": 6}
    assert skipped == ["moodle.zip:Alice Smith_12345_assignsubmission_onlinetext_/"
                       "onlinetext.html: not a notebook (only .ipynb files are graded): "
                       "moodle.zip:Alice Smith_12345_assignsubmission_file_/backprop.ipynb "
                       "is graded instead"]
    assert lms_json(lms_course, "12346") == {
        "lms": "moodle", "file": "Zoë Ångström_12346_assignsubmission_file_/My Work/"
                                 "backprop.ipynb",
        "name": "Zoë Ångström", "user_id": "12346", "submission_id": None, "late": False,
        "submitted_at": NOON_UTC}


def _blackboard_record(name: str, username: str, stamp: str, file: str) -> str:
    return (f"Name: {name} ({username})\nAssignment: Backprop\n"
            "Date Submitted: Friday, 20 November 2026 12:00:00 o'clock EST\n"
            "Current Grade: Needs Grading\n\nSubmission Field:\nThere is no student "
            f"submission text data for this assignment.\n\nFiles:\n\tOriginal filename: {file}"
            f"\n\tFilename: Backprop_{username}_attempt_{stamp}_{file}\n")


def test_a_blackboard_zip_keeps_the_latest_attempt_and_its_time(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    early, late = "2026-11-19-08-15-00", "2026-11-20-12-00-00"
    download = write_zip(tmp_path / "gradebook_Backprop.zip", {
        f"Backprop_asmith_attempt_{early}.txt":
            _blackboard_record("Alice Smith", "asmith", early, "backprop.ipynb"),
        f"Backprop_asmith_attempt_{early}_backprop.ipynb": notebooks["solved"],
        f"Backprop_asmith_attempt_{late}.txt":
            _blackboard_record("Alice Smith", "asmith", late, "backprop.ipynb"),
        f"Backprop_asmith_attempt_{late}_backprop.ipynb": notebooks["broken"],
        f"Backprop_bjones_attempt_{early}.txt":
            _blackboard_record("Bob Jones", "bjones", early, "notes.txt"),
        f"Backprop_bjones_attempt_{early}_notes.txt": "my notes",
    })
    results, skipped, out = grade(lms_course, download)
    assert "read as a Blackboard download" in out
    assert {sid: (r.status, r.score) for sid, r in results.items()} == {
        "asmith": ("graded", 6), "bjones": ("invalid", 0)}
    assert results["bjones"].reason == "no notebook was submitted (found: notes.txt)"
    zip_ = "gradebook_Backprop.zip:"
    assert skipped == [
        f"{zip_}Backprop_asmith_attempt_{early}_backprop.ipynb: older submission of 'asmith' "
        f"superseded by {zip_}Backprop_asmith_attempt_{late}_backprop.ipynb",
        f"{zip_}Backprop_bjones_attempt_{early}_notes.txt: not a notebook (only .ipynb files "
        "are graded): 'bjones' has no notebook in this download"]
    # The attempt stamp is the server's local time, even where the member time says other.
    assert lms_json(lms_course, "asmith") == {
        "lms": "blackboard", "file": f"Backprop_asmith_attempt_{late}_backprop.ipynb",
        "name": "Alice Smith", "user_id": "asmith", "submission_id": None, "late": False,
        "submitted_at": NOON_UTC}
    assert results["asmith"].timestamp == NOON_UTC
    assert lms_json(lms_course, "bjones")["submitted_at"] == "2026-11-19T13:15:00+00:00"


def test_a_later_download_grades_only_what_changed(lms_course: Course,
                                                    notebooks: dict[str, str],
                                                    tmp_path: Path) -> None:
    """Download B is A again (downloaded a day later: every member time is new) with one
    student's new submission and one new student: those two are graded, the rest kept."""
    first = {"kim_20001_700001_backprop.ipynb": notebooks["blank"],
             "lee_20002_700002_backprop.ipynb": notebooks["solved"],
             "ng_20003_700003_backprop.ipynb": notebooks["broken"]}
    results, _, _ = grade(lms_course, write_zip(tmp_path / "a.zip", first))
    assert {sid: r.score for sid, r in results.items()} == {"20001": 0, "20002": 10,
                                                             "20003": 6}
    next_day = (2026, 11, 21, 8, 0, 0)
    second = {name: (next_day, content) for name, content in first.items()}
    second["kim_LATE_20001_700101_backprop-1.ipynb"] = (next_day, notebooks["solved"])
    second["ow_20004_700104_backprop.ipynb"] = (next_day, notebooks["solved"])
    results, skipped, out = grade(lms_course, write_zip(tmp_path / "b.zip", second))

    assert "2 already graded and unchanged: kept" in out
    graded = [line for line in out.splitlines() if line.startswith("[")]
    assert len(graded) == 2 and all(" 20001: " in line or " 20004: " in line
                                    for line in graded), graded
    assert {sid: r.score for sid, r in results.items()} == {
        "20001": 10, "20002": 10, "20003": 6, "20004": 10}
    assert skipped == ["b.zip:kim_20001_700001_backprop.ipynb: older submission of '20001' "
                       "superseded by b.zip:kim_LATE_20001_700101_backprop-1.ipynb"]
    # Neither download's member times (each the time its zip was made) are submission times.
    assert not (lms_course.submitted_dir("20002", "backprop") / "timestamp.txt").exists()
    assert results["20002"].timestamp is None and results["20001"].timestamp is None
    assert lms_json(lms_course, "20001")["late"] is True and results["20001"].lms_late
    # Graded again from submitted/, the flag is read back from lms.json.
    stored = {s.student_id: s for s in submitted_in_course(lms_course, "backprop",
                                                             "backprop").submissions}
    assert stored["20001"].lms_late and not stored["20002"].lms_late


def test_an_nbgrader_folder_takes_accented_ids_and_names_what_is_wrong(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    folder = write_submissions(tmp_path / "incoming", {"josé": notebooks["solved"],
                                                       "twice": notebooks["solved"]})
    (folder / "twice" / "backprop" / "second.ipynb").write_text(notebooks["blank"])
    renamed = folder / "renamed" / "backprop"
    renamed.mkdir(parents=True)
    (renamed / "my attempt.ipynb").write_text(notebooks["broken"])  # the only one: accepted
    only_pdf = folder / "onlypdf" / "backprop"
    only_pdf.mkdir(parents=True)
    (only_pdf / "report.pdf").write_bytes(b"%PDF-1.4")
    results, skipped, _ = grade(lms_course, folder)
    assert {sid: (r.status, r.score) for sid, r in results.items()} == {
        "josé": ("graded", 10), "renamed": ("graded", 6), "onlypdf": ("invalid", 0)}
    assert results["onlypdf"].reason == "no notebook was submitted (found: report.pdf)"
    assert skipped == [f"{folder}/twice/backprop: holds 2 notebooks (backprop.ipynb, "
                       "second.ipynb); one is expected"]
    assert not (lms_course.submitted_dir("josé", "backprop") / "lms.json").exists()


def test_one_notebook_needs_a_student_id(lms_course: Course, notebooks: dict[str, str],
                                         tmp_path: Path) -> None:
    single = tmp_path / "alice_backprop.ipynb"
    single.write_text(notebooks["solved"])
    with pytest.raises(SubmissionError, match=r"one notebook needs --student ID"):
        collect(lms_course, "backprop", "backprop", single)
    assert not lms_course.submitted_dir("alice_backprop", "backprop").exists()
    found, skipped = collect(lms_course, "backprop", "backprop", single, student_id="a.lice")
    assert [s.student_id for s in found] == ["a.lice"] and not skipped


def _course_with(tmp_path: Path, lms_course: Course, settings: str) -> Course:
    root = tmp_path / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text(
        (lms_course.root / "nbgrader_config.py").read_text() + settings)
    return Course.load(root)


def test_named_regexp_and_valid_ext_are_nbgraders_own_settings(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    """nbgrader's documented example pattern decides alone when it is set; nbgrader's own
    FileNameCollectorPlugin reads the same values from the same file."""
    regexp = r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>\w+)"
    course = _course_with(tmp_path, lms_course,
                          f"c.FileNameCollectorPlugin.named_regexp = {regexp!r}\n")
    download = write_zip(tmp_path / "ps1.zip", {
        "ps1_bitdiddle_attempt_2016-01-30-15-00-00_backprop.ipynb": notebooks["solved"],
        "ps1_hacker_attempt_2016-01-30-16-30-00_backprop.ipynb": notebooks["solved"],
        "smithalice_10001_678901_backprop.ipynb": notebooks["solved"],
    })
    out = io.StringIO()
    found, skipped = collect(course, "backprop", "backprop", download, out=out)
    assert "read as named by c.FileNameCollectorPlugin.named_regexp" in out.getvalue()
    assert {s.student_id: s.timestamp for s in found} == {
        "bitdiddle": "2016-01-30T20:00:00+00:00", "hacker": "2016-01-30T21:30:00+00:00"}
    assert [s.item for s in skipped] == ["ps1.zip:smithalice_10001_678901_backprop.ipynb"]
    assert lms_json(course, "hacker")["lms"] == downloads.NAMED_REGEXP

    from nbgrader.plugins.zipcollect import FileNameCollectorPlugin

    theirs = FileNameCollectorPlugin(config=course.config)
    ours = downloads.reading(course.config)
    assert ours.pattern.pattern == theirs.named_regexp
    assert list(ours.valid_ext) == theirs.valid_ext == [".ipynb"]
    assert downloads.reading(Course.load(lms_course.root).config).pattern is None
    assert FileNameCollectorPlugin(config=lms_course.config).named_regexp == ""


@pytest.mark.parametrize("settings, message", [
    ("c.LmsDownload.timezone = 'Mars/Olympus'\n",
     "c.LmsDownload.timezone = 'Mars/Olympus' is not a known time zone"),
    ("c.FileNameCollectorPlugin.named_regexp = r'(?P<name>.*)_(?P<file_id>.*)'\n",
     r"named_regexp has no \(\?P<student_id>...\) group"),
    ("c.FileNameCollectorPlugin.named_regexp = '(unclosed'\n",
     "named_regexp is not a regular expression"),
    ("c.FileNameCollectorPlugin.valid_ext = 'ipynb'\n", "valid_ext must be a list"),
])
def test_unusable_download_settings_are_named_and_nothing_is_written(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path, settings: str,
        message: str) -> None:
    course = _course_with(tmp_path, lms_course, settings)
    download = write_zip(tmp_path / "d.zip",
                         {"smithalice_10001_678901_backprop.ipynb": notebooks["solved"]})
    with pytest.raises(SubmissionError, match=message):
        collect(course, "backprop", "backprop", download)
    assert not (course.root / "submitted").exists()


@pytest.mark.parametrize("path, shape, owner", [
    ("smithalice_10001_678901_backprop.ipynb", downloads.CANVAS,
     ("10001", "smithalice", False, "678901", 0)),
    ("smithjohn_LATE_10011_678905_backprop-2.ipynb", downloads.CANVAS,
     ("10011", "smithjohn", True, "678905", 2)),
    ("o_brien_late_31_7_my_file.ipynb", downloads.CANVAS, ("31", "o_brien", True, "7", 0)),
    ("export/smithalice_10001_678901_backprop.ipynb", downloads.CANVAS,
     ("10001", "smithalice", False, "678901", 0)),
    ("Alice Smith_12345_assignsubmission_file_backprop.ipynb", downloads.MOODLE,
     ("12345", "Alice Smith", False, None, 0)),
])
def test_names_are_read_as_each_lms_gives_them(path: str, shape: str, owner: tuple) -> None:
    found = downloads.recognise(path, shape, "backprop")
    assert (found.student_id, found.name, found.late, found.submission_id,
            found.resubmission) == owner


def test_the_shape_of_a_download_is_what_most_of_its_files_carry() -> None:
    canvas = ["a_1_2_backprop.ipynb", "b_3_4_report.pdf", "odd.ipynb"]
    assert downloads.detect(canvas, "backprop") == downloads.CANVAS
    folders = ["alice/backprop.ipynb", "bob/backprop/backprop.ipynb", "x_1_2_y.ipynb"]
    assert downloads.detect(folders, "backprop") == downloads.NBGRADER
    stamp = "Backprop_asmith_attempt_2026-11-20-12-00-00"
    assert downloads.detect([f"{stamp}.txt", f"{stamp}_backprop.ipynb"], "backprop") \
        == downloads.BLACKBOARD
    record = downloads.recognise(f"{stamp}.txt", downloads.BLACKBOARD, "backprop")
    assert record.record and record.stamp == datetime(2026, 11, 20, 12)
    assert downloads.recognise("Backprop_asmith_attempt_2026-13-20-12-00-00.txt",
                               downloads.BLACKBOARD, "backprop") is None


def test_a_stated_submission_time_is_taken_again_canvas_states_none(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    """The same notebook imported again takes the time the download states now (Moodle's
    member time, Blackboard's stamp); Canvas states none, and a time stored before is gone."""
    course = _course_with(tmp_path, lms_course, "")
    canvas, board = "x_30001_1_backprop.ipynb", "Backprop_zed_attempt_{}_backprop.ipynb"
    moodle = "Zoe Ma_30002_assignsubmission_file_/backprop.ipynb"
    solved, later = notebooks["solved"], (2026, 12, 1, 0, 0, 0)
    stale = course.submitted_dir("30001", "backprop") / "timestamp.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text(NOON_UTC)  # e.g. from an import before Canvas's times were known
    for download in ({canvas: solved}, {board.format("2026-11-20-12-00-00"): solved},
                     {moodle: solved}):
        collect(course, "backprop", "backprop", write_zip(tmp_path / "first.zip", download))
    found = [s for download in ({canvas: (later, solved)},
                                {board.format("2026-11-20-13-00-00"): (later, solved)},
                                {moodle: (later, solved)})
             for s in collect(course, "backprop", "backprop",
                              write_zip(tmp_path / "again.zip", download)).submissions]
    assert {s.student_id: s.timestamp for s in found} == {
        "30001": None, "zed": "2026-11-20T18:00:00+00:00",
        "30002": "2026-12-01T05:00:00+00:00"}
    assert lms_json(course, "30001")["submitted_at"] is None and not stale.exists()
    assert lms_json(course, "30002")["submitted_at"] == "2026-12-01T05:00:00+00:00"


def test_a_download_without_any_notebook_is_refused_whole(lms_course: Course,
                                                          tmp_path: Path) -> None:
    """Every student would be invalid: the wrong assignment's download, most likely."""
    course = _course_with(tmp_path, lms_course, "")
    download = write_zip(tmp_path / "essays.zip", {"a_1_2_essay.pdf": b"%PDF",
                                                   "__MACOSX/._a_1_2_x.ipynb": b"\x00"})
    with pytest.raises(SubmissionError, match=r"essays.zip contains no notebook \(.ipynb file\)"):
        collect(course, "backprop", "backprop", download)
    assert not (course.root / "submitted").exists()


@pytest.mark.parametrize("lms, victim, members", [
    ("canvas", "10002", {
        "victim_10002_777_backprop.ipynb": "solved",
        # Mallory's display name holds the victim's ids; her own ids come after it
        "x_10002_999999999_y_10003_888_backprop.ipynb": "blank"}),
    ("moodle", "12346", {
        "Bob Jones_12346_assignsubmission_file_/backprop.ipynb": "solved",
        # a folder Mal made inside hers, named as Moodle names Bob's
        "Mal Lory_12347_assignsubmission_file_/Bob Jones_12346_assignsubmission_file_/"
        "backprop.ipynb": "blank"}),
    ("blackboard", "bjones", {
        "Backprop_bjones_attempt_2026-11-20-10-00-00_backprop.ipynb": "solved",
        # Mallory's own file name reads as a later attempt of bjones
        "Backprop_mallory_attempt_2026-11-20-11-00-00_y_bjones_attempt_2030-01-01-00-00-00_"
        "backprop.ipynb": "blank"}),
])
def test_a_name_that_reads_as_another_students_never_replaces_their_work(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path, lms: str, victim: str,
        members: dict[str, str]) -> None:
    download = write_zip(tmp_path / f"{lms}.zip",
                         {name: notebooks[kind] for name, kind in members.items()})
    results, skipped, output = grade(lms_course, download)
    assert results[victim].score == 10, output
    assert results[victim].status == "graded"
    if lms == "moodle":  # the first folder is Moodle's: the notebook is Mal's (12347)
        assert results["12347"].score == 0 and not skipped
    else:
        assert len(skipped) == 1 and "reads as more than one student's" in skipped[0], skipped


def test_a_member_with_thousands_of_digits_costs_that_member_alone(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    download = write_zip(tmp_path / "digits.zip", {
        "smithalice_10001_678901_backprop.ipynb": notebooks["solved"],
        f"smithbob_10002_678902_backprop-{'9' * 4400}.ipynb": notebooks["solved"],
        f"smithcarl_{'7' * 4400}_678903_backprop.ipynb": notebooks["solved"]})
    results, skipped, output = grade(lms_course, download)
    assert results["10001"].score == results["10002"].score == 10, output
    assert len(skipped) == 1 and "smithcarl" in skipped[0]


# -- times: Canvas states none, a corrected zone takes effect, unusable timestamp.txt ----------

DUE = "2026-11-20 17:00:00 UTC"  # noon in Toronto
AFTER_DUE = (2026, 11, 23, 9, 0, 0)  # when the instructor downloaded: days after the due date


@pytest.fixture(scope="module")
def due_course(tmp_path_factory: pytest.TempPathFactory) -> Course:
    """A course with a due date, penalty "zero", and no c.LmsDownload.timezone set."""
    root = tmp_path_factory.mktemp("due") / "course"
    root.mkdir()
    make_course(root)
    with open(root / "nbgrader_config.py", "a") as config:
        config.write('\nc.LateSubmissionPlugin.penalty_method = "zero"\n')
    course = Course.load(root)
    run_nbgrader(course, "db", "assignment", "add", "backprop", f"--duedate={DUE}")
    return course


def _in_gradebook(course: Course, student: str) -> tuple[float, float]:
    """(late penalty, seconds late) of a student's submission, as nbgrader's API reads them."""
    with Gradebook(course.db_url) as gradebook:
        submission = gradebook.find_submission("backprop", student)
        return submission.late_submission_penalty or 0, submission.total_seconds_late


def test_a_canvas_zip_downloaded_after_the_due_date_is_late_by_its_flag_alone(
        due_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    """Canvas sets no member times: each is the time the zip was made. A download made after
    the due date marks nobody late; Canvas's LATE flag does, by c.LatePolicy.lms_flag_rule."""
    download = write_zip(tmp_path / "submissions.zip", {
        "ontimeolga_40001_800001_backprop.ipynb": (AFTER_DUE, notebooks["solved"]),
        "latepete_LATE_40002_800002_backprop.ipynb": (AFTER_DUE, notebooks["solved"])})
    results, skipped, out = grade(due_course, download)
    assert not skipped and "WARNING" not in out, out
    assert (results["40001"].score, results["40001"].seconds_late) == (10, 0)
    assert (results["40002"].late_penalty, results["40002"].seconds_late) == (10, 1)
    assert _in_gradebook(due_course, "40001") == (0, 0)  # nbgrader agrees
    assert _in_gradebook(due_course, "40002") == (10, 1)


def test_a_corrected_time_zone_takes_effect_on_the_next_import(
        due_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    """Moodle's member times are the server's clock: read as UTC until the zone is set; once
    set, the same download gives the right times, on a plain rerun and with --regrade."""
    download = write_zip(tmp_path / "moodle.zip", {
        # 12:30 in Toronto is 17:30 UTC: half an hour late, but "on time" read as UTC
        "Ann Lee_50001_assignsubmission_file_/backprop.ipynb":
            ((2026, 11, 20, 12, 30, 0), notebooks["solved"]),
        "Ben Ito_50002_assignsubmission_file_/backprop.ipynb":
            ((2026, 11, 20, 11, 0, 0), notebooks["solved"])})
    results, _, out = grade(due_course, download)
    assert "read as a Moodle download (" in out
    assert "times read as UTC (c.LmsDownload.timezone not set)" in out
    assert results["50001"].timestamp == "2026-11-20T12:30:00+00:00"
    assert (results["50001"].score, results["50001"].late_penalty) == (10, 0)

    config = due_course.root / "nbgrader_config.py"
    before = config.read_text()
    try:
        config.write_text(before + f"\nc.LmsDownload.timezone = {ZONE!r}\n")
        course = Course.load(due_course.root)
        for options in ({}, {"regrade": True}):
            results, _, out = grade(course, download, **options)
            assert f"times read in {ZONE}" in out
            assert results["50001"].timestamp == "2026-11-20T17:30:00+00:00", options
            assert results["50001"].seconds_late == 1800 and results["50001"].late_penalty == 10
            assert results["50002"].seconds_late == 0
            assert _in_gradebook(course, "50001") == (10, 1800)
            stored = course.submitted_dir("50001", "backprop") / "timestamp.txt"
            assert stored.read_text() == "2026-11-20T17:30:00+00:00"
    finally:
        config.write_text(before)


def test_member_times_all_in_one_minute_are_warned_about(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    """A re-zipped Moodle download: every member carries the zip's time, not the students'."""
    course = _course_with(tmp_path, lms_course, "")
    one_minute = {f"Stu Dent{n}_6000{n}_assignsubmission_file_/backprop.ipynb":
                  ((2026, 11, 23, 9, 0, n), notebooks["solved"]) for n in range(3)}
    out = io.StringIO()
    collect(course, "backprop", "backprop", write_zip(tmp_path / "m.zip", one_minute), out=out)
    assert ("WARNING: m.zip: all 3 submission times are 2026-11-23 09:00 (the LMS server's "
            "clock), to the minute: that is when the zip was made") in out.getvalue()
    spread = dict(one_minute)
    spread["Stu Dent0_60000_assignsubmission_file_/backprop.ipynb"] = (
        (2026, 11, 20, 8, 0, 0), notebooks["solved"])
    out = io.StringIO()
    collect(course, "backprop", "backprop", write_zip(tmp_path / "n.zip", spread), out=out)
    assert "WARNING" not in out.getvalue()


@pytest.mark.parametrize("text", ["1 2 3", "0001-01-01 00:00:00 +0100",
                                  "2999-01-01 00:00:00 UTC"])
def test_a_timestamp_nbgrader_cannot_read_is_unknown_and_listed(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path, text: str) -> None:
    """dateutil reads "1 2 3"; gradebook.db's parser (nbgrader's) does not. Such a time is
    unknown: the student is graded and recorded, and the run lists the file."""
    folder = write_submissions(tmp_path / "in", {"odd": notebooks["solved"],
                                                 "fine": notebooks["solved"]})
    (folder / "odd" / "backprop" / "timestamp.txt").write_text(text)
    (folder / "fine" / "backprop" / "timestamp.txt").write_text("2026-11-20 10:00:00 UTC")
    results, skipped, _ = grade(lms_course, folder, regrade=True)
    assert results["odd"].status == "graded" and results["odd"].timestamp is None
    assert results["fine"].timestamp == "2026-11-20 10:00:00 UTC"
    stored = lms_course.submitted_dir("odd", "backprop") / "timestamp.txt"
    assert not stored.exists()
    assert reason_of(skipped, f"{folder}/odd/backprop/timestamp.txt").startswith(repr(text))
    # One already under submitted/ (nbgrader's exchange copies what students sent): the same.
    stored.write_text(text)
    results, skipped, _ = grade(lms_course, None, regrade=True, student_id="odd")
    assert results["odd"].status == "graded" and results["odd"].timestamp is None
    assert reason_of(skipped, str(stored)).endswith("the submission time is unknown (judged "
                                                    "on time, or by the LMS's late flag)")


@pytest.mark.parametrize("lms, files", [
    ("Canvas", ["smithalice_10001_678901_backprop.ipynb",
                "smithjohn_LATE_10011_678905_backprop.ipynb"]),
    ("Moodle", ["Alice Smith_12345_assignsubmission_file_/backprop.ipynb",
                "Zoë Ångström_12346_assignsubmission_file_/backprop.ipynb"]),
    ("Blackboard", ["Backprop_asmith_attempt_2026-11-20-12-00-00_backprop.ipynb",
                    "Backprop_asmith_attempt_2026-11-20-12-00-00.txt"]),
])
def test_an_unzipped_download_is_named_and_the_zip_asked_for(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path, lms: str,
        files: list[str]) -> None:
    """Safari unzips downloads: the folder is not nbgrader's layout, and the message says what
    it is instead of only what it is not."""
    folder = tmp_path / "submissions"
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(notebooks["solved"])
    with pytest.raises(SubmissionError, match=rf"holds the files of an unzipped {lms} "
                                              rf"download .*pass the zip {lms} gave"):
        collect(lms_course, "backprop", "backprop", folder)


@pytest.mark.parametrize("with_records", [True, False])
def test_blackboard_usernames_with_underscores_are_whole(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path,
        with_records: bool) -> None:
    """"Backprop_john_doe_attempt_..." is john_doe's, not doe's: the attempt's .txt says so,
    or, without one, the part every name shares is the assignment's."""
    attempts = {"john_doe": ("John Doe", "2026-11-20-13-00-00", "blank"),
                "doe": ("Dana Doe", "2026-11-20-12-00-00", "solved")}
    members: dict[str, str] = {}
    for username, (name, stamp, kind) in attempts.items():
        members[f"Backprop_{username}_attempt_{stamp}_backprop.ipynb"] = notebooks[kind]
        if with_records:
            members[f"Backprop_{username}_attempt_{stamp}.txt"] = _blackboard_record(
                name, username, stamp, "backprop.ipynb")
    results, skipped, output = grade(lms_course, write_zip(tmp_path / "bb.zip", members))
    assert results["doe"].score == 10 and results["john_doe"].score == 0, output
    assert not skipped, skipped


def test_an_nbgrader_zip_takes_each_students_timestamp_txt(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    """A zip of nbgrader's submitted/ layout: the time is timestamp.txt's, as from the folder;
    a member's own time is when someone zipped it."""
    late = (2026, 11, 27, 2, 19, 48)  # zipped a week after everything
    download = write_zip(tmp_path / "nbgrader.zip", {
        "frank/backprop/backprop.ipynb": (late, notebooks["solved"]),
        "frank/backprop/timestamp.txt": (late, "2026-11-19 12:00:00.000000 UTC"),
        "gina/backprop/backprop.ipynb": (late, notebooks["solved"]),
        "gina/backprop/timestamp.txt": (late, "\ufeff2026-11-19 12:00:00 UTC")})
    results, skipped, _ = grade(lms_course, download)
    assert results["frank"].timestamp == "2026-11-19T12:00:00+00:00"
    assert results["gina"].timestamp is None  # nbgrader could not read it: unknown, listed
    assert len(skipped) == 1 and "gina/backprop/timestamp.txt" in skipped[0]
    assert "characters no time has" in skipped[0]


def test_a_timestamp_nbgrader_cannot_read_is_not_cleaned_into_one(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    folder = write_submissions(tmp_path / "in", {"bomdave": notebooks["solved"]})
    (folder / "bomdave" / "backprop" / "timestamp.txt").write_bytes(
        b"\xef\xbb\xbf2026-11-21 17:00:00 UTC\n")
    results, skipped, _ = grade(lms_course, folder)
    assert results["bomdave"].timestamp is None
    assert any("bomdave" in line and "characters no time has" in line for line in skipped)


def test_a_student_option_that_disagrees_with_the_download_is_refused(
        lms_course: Course, notebooks: dict[str, str], tmp_path: Path) -> None:
    download = write_zip(tmp_path / "one.zip",
                         {"jonesbob_10002_678902_backprop.ipynb": notebooks["blank"]})
    with pytest.raises(SubmissionError, match="--student 10001, but one.zip holds the "
                                              "submission of '10002': nothing was stored"):
        collect(lms_course, "backprop", "backprop", download, "10001")
