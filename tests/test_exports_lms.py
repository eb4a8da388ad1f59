"""Final scores and the LMS round trip's way back: one private course, graded for real, with a
roster, a manual score and extra credit set through nbgrader's Gradebook API (as formgrader
does), a late penalty in gradebook.db and a rostered student who submitted nothing; then the
plain CSV, the terminal table, Canvas's gradebook import (filled template and configured
header), Moodle's grading worksheet and the feedback zip, each checked against
`nbgrader export` and against what Canvas and Moodle parse."""

from __future__ import annotations

import copy
import csv
import io
import re
import shutil
import sqlite3
import subprocess
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from autograder import commands
from autograder.course import Course
from autograder.export import ExportError
from autograder.lms.record import write_lms_record
from autograder.scores import final_scores
from tests.conftest import (
    AUTOGRADER,
    grade_answers,
    make_course,
    nbgrader_export,
    run_nbgrader,
    train_step_calling,
)

ROSTER = {  # id: (first, last, email); two students named John Smith
    "10001": ("Alice", "Smith", "alice@example.edu"),
    "10010": ("John", "Smith", "john.smith@example.edu"),
    "10011": ("John", "Smith", "jsmith2@example.edu"),
    "10020": ("Larry", "Late", "larry@example.edu"),
    "10030": ("Mary", "Manual", "mary@example.edu"),
    "10040": ("Mo", "Missing", "mo@example.edu"),  # never submits
}
PENALTY = 2.5  # 10020's, as nbgrader's LateSubmissionPlugin would have written it
MANUAL = ("check_train", 3.0)  # formgrader: Mary's training cell regraded by hand
EXTRA = ("check_forward_backward", 0.5)  # and extra credit on another cell
CANVAS_POINTS = 20  # the Canvas assignment is out of 20, ours out of 10
BOM = "\ufeff"
EXTENSION = timedelta(hours=6)  # 10020 submitted a day late, with a six-hour extension


@pytest.fixture(scope="module")
def graded(tmp_path_factory, release_notebook, solution) -> dict:
    course = make_course(tmp_path_factory.mktemp("exports"))
    wrong_order = {**solution, "train_step": train_step_calling(
        "optimizer.zero_grad()", "optimizer.step()", "loss.backward()")}
    stamp = b"2026-11-19 10:00:00 UTC"
    results = grade_answers(
        course, release_notebook, tmp_path_factory.mktemp("incoming"),
        {"10001": solution, "10010": solution, "10011": wrong_order, "10020": solution,
         "10030": wrong_order, "10060": {}},  # 10060: graded, not in Canvas's template
        timestamps={"10001": stamp, "10010": stamp, "10011": stamp, "10030": stamp,
                    "10060": stamp, "10020": b"2026-11-21 12:00:00 UTC"})
    with Gradebook(course.db_url, course_id=course.course_id) as gradebook, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for student, (first, last, email) in ROSTER.items():  # as `nbgrader db student import`
            gradebook.update_or_create_student(student, first_name=first, last_name=last,
                                               email=email)
        gradebook.update_or_create_assignment("backprop", duedate="2026-11-20 12:00:00 UTC")
        larry = gradebook.find_submission("backprop", "10020")
        larry.extension = EXTENSION  # stored as nbgrader stores an Interval in SQLite
        manual = gradebook.find_grade(MANUAL[0], "backprop", "backprop", "10030")
        manual.manual_score = MANUAL[1]  # what formgrader's score box does
        extra = gradebook.find_grade(EXTRA[0], "backprop", "backprop", "10030")
        extra.extra_credit = EXTRA[1]
        gradebook.db.commit()
    with sqlite3.connect(course.root / "gradebook.db") as db:  # the late step's column
        db.execute("UPDATE submitted_notebook SET late_submission_penalty = ? WHERE id IN "
                   "(SELECT sn.id FROM submitted_notebook sn JOIN submitted_assignment sa "
                   "ON sa.id = sn.assignment_id WHERE sa.student_id = '10020')", (PENALTY,))
    auto = results["10030"].cell_scores()
    mary = sum(auto.values()) - auto[MANUAL[0]] + MANUAL[1] + EXTRA[1]
    expected = {"10001": 10.0, "10010": 10.0, "10011": results["10011"].score,
                "10020": 10.0 - PENALTY, "10030": mary, "10040": 0.0, "10060": 0.0}
    return {"course": course, "results": results, "expected": expected}


def with_settings(course: Course, **sections: dict) -> Course:
    """The course with settings added to its nbgrader_config.py's, as an instructor would."""
    config = copy.deepcopy(course.config)
    for section, values in sections.items():
        for key, value in values.items():
            config[section][key] = value
    return replace(course, config=config)


def test_the_grading_is_what_the_figures_below_assume(graded) -> None:
    results = graded["results"]
    assert results["10011"].score == 6.0 and results["10030"].score == 6.0
    assert results["10030"].cell_scores()[MANUAL[0]] == 0.0  # the hand grade raises it
    assert graded["expected"]["10030"] == 9.5


def test_final_scores_are_nbgrader_exports_for_every_rostered_student(graded, tmp_path) -> None:
    course, expected = graded["course"], graded["expected"]
    ours = {row.student_id: row for row in final_scores(course, "backprop")}
    theirs = nbgrader_export(course, tmp_path)
    assert set(ours) == set(theirs) == set(expected)
    for student, row in ours.items():
        nb = theirs[student]
        assert row.score == float(nb["score"]) == expected[student], student
        assert row.raw_score in (None, float(nb["raw_score"]))
        assert row.late_penalty == float(nb["late_submission_penalty"] or 0)
        assert row.max_score == float(nb["max_score"]) == 10.0
    mary = ours["10030"]
    assert (mary.autograded, mary.manual_adjustment, mary.extra_credit) == (6.0, 3.0, 0.5)
    larry = ours["10020"]
    assert larry.late_penalty == PENALTY and larry.late
    with Gradebook(course.db_url, course_id=course.course_id) as gradebook:
        late_by_nbgrader = gradebook.find_submission("backprop", "10020").total_seconds_late
    assert larry.seconds_late == late_by_nbgrader == 18 * 3600
    assert not ours["10001"].late and ours["10001"].seconds_late == 0
    mo = ours["10040"]
    assert mo.missing and mo.status == "missing" and mo.raw_score is None
    assert (mo.first_name, mo.last_name, mo.display_name) == ("Mo", "Missing", "Missing, Mo")
    assert ours["10060"].status == "graded" and ours["10060"].first_name == ""
    blank = {row.student_id: row.score for row in final_scores(course, "backprop",
                                                               missing="blank")}
    assert blank["10040"] is None and blank["10001"] == 10.0


def test_plain_csv_and_table_show_final_score_penalty_manual_and_missing(graded) -> None:
    course, expected = graded["course"], graded["expected"]
    path = commands.export(course, "backprop", "csv")
    rows = {row["student_id"]: row for row in csv.DictReader(path.open())}
    assert set(rows) == set(expected)
    for student, score in expected.items():
        assert float(rows[student]["total"]) == score, student
    assert rows["10030"]["manual_adjustment"] == "3.0" and rows["10030"]["extra_credit"] == "0.5"
    assert rows["10030"]["autograded"] == "6.0"
    assert rows["10020"]["late_penalty"] == "2.5" and rows["10020"]["late"] == "True"
    assert rows["10040"]["missing"] == "True" and rows["10040"]["status"] == "missing"
    assert rows["10040"]["last_name"] == "Missing"
    # the per-test columns of our results stay: 10011 fails the training tests
    assert rows["10011"]["lesson_network_gradients"] == "1.0" or \
        float(rows["10011"]["lesson_network_gradients"]) > 0
    assert float(rows["10011"]["one_step_from_stale_gradients"]) == 0.0
    assert rows["10040"]["lesson_network_gradients"] == ""  # missing: no test ran
    blank = commands.export(course, "backprop", "csv", course.root / "exports" / "b.csv",
                            missing="blank")
    assert next(r for r in csv.DictReader(blank.open())
                if r["student_id"] == "10040")["total"] == ""

    table = commands.show_table(course, "backprop")
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "missing" in lines["10040"] and "penalty" in table and "manual" in table
    assert " 7.5 " in lines["10020"] and " 9.5 " in lines["10030"]


def canvas_template(path: Path, backprop_column: str = "Backprop (222)",
                    extra_column: str | None = None) -> Path:
    """A gradebook as Canvas exports it: BOM, Points Possible row, the test student, other
    assignments, read-only totals, two John Smiths, a student we do not know."""
    header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Quiz 1 (111)",
              backprop_column, "Essay (333)", "Current Score", "Unposted Current Score",
              "Final Score"]
    if extra_column:
        header.insert(7, extra_column)
    rows = [header,
            ["    Points Possible", "", "", "", "", "5.00", f"{CANVAS_POINTS}.00", "30.00",
             "(read only)", "(read only)", "(read only)"],
            ["Student, Test", "99999", "", "c2f1e0a9", "Section 1", "", "", "", "", "", ""],
            ["Smith, Alice", "10001", "S1", "asmith", "Section 1", "4.00", "", "25.00",
             "85.71", "85.71", "85.71"],
            ["Smith, John", "10010", "S2", "jsmith", "Section 1", "5.00", "", "", "100", "", ""],
            ["Smith, John", "10011", "S3", "jsmith2", "Section 2", "3.00", "", "", "60", "", ""],
            ["Late, Larry", "10020", "S4", "llate", "Section 2", "", "", "", "", "", ""],
            ["Manual, Mary", "10030", "S5", "mmanual", "Section 2", "", "", "", "", "", ""],
            ["Missing, Mo", "10040", "S6", "mmissing", "Section 2", "", "17.00", "", "", "", ""],
            ['=HYPERLINK("http://evil.example","x")', "10050", "S7", "-dropped", "Section 2",
             "2.50", "12.00", "", "", "", ""]]
    if extra_column:
        for row in rows[1:]:
            row.insert(7, "")
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_bytes((BOM + buffer.getvalue()).encode("utf-8"))
    return path


def read_csv(path: Path) -> tuple[bool, list[list[str]]]:
    text = path.read_bytes().decode("utf-8")
    return text.startswith(BOM), list(csv.reader(io.StringIO(text.removeprefix(BOM))))


def test_canvas_template_is_filled_for_every_rostered_student_by_id(graded, tmp_path) -> None:
    course, expected = graded["course"], graded["expected"]
    template = canvas_template(tmp_path / "canvas_gradebook.csv")
    out = tmp_path / "filled.csv"
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "export", "backprop",
                           "--format", "canvas", "--template", str(template), "--output",
                           str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    had_bom, rows = read_csv(out)
    _, before = read_csv(template)
    assert had_bom and len(rows) == len(before) and rows[0] == before[0]
    column = rows[0].index("Backprop (222)")
    by_id = {row[1]: row for row in rows[2:]}
    for student in ROSTER:  # every rostered student, matched by ID, scaled to 20
        assert float(by_id[student][column]) == expected[student] * 2, student
    assert by_id["10010"][column] == "20" and by_id["10011"][column] == "12"
    assert by_id["10020"][column] == "15" and by_id["10030"][column] == "19"
    assert by_id["10040"][column] == "0"  # missing: 0, as nbgrader export
    assert by_id["99999"] == before[2] and by_id["10050"][column] == "12.00"  # as they were
    for old, new in zip(before[1:], rows[1:], strict=True):  # other columns untouched
        assert [c for i, c in enumerate(old) if i != column] == \
            [c for i, c in enumerate(new) if i != column] or new[1] == "10050"
    assert by_id["10050"][0].startswith("'=HYPERLINK") and by_id["10050"][3] == "'-dropped"
    assert by_id["10050"][5] == "2.50"  # numbers stay numbers
    assert "10060 (0/10)" in done.stdout and "not in" in done.stdout
    assert "6 score(s) filled (6 of our 7 student(s) matched in the template)" in done.stdout

    blank = commands.export(course, "backprop", "canvas", tmp_path / "blank.csv",
                            template=template, missing="blank")
    assert {row[1]: row for row in read_csv(blank)[1]}["10040"][column] == "17.00"


def test_canvas_column_is_found_by_id_or_name_else_a_clear_error(graded, tmp_path) -> None:
    course = graded["course"]
    ambiguous = canvas_template(tmp_path / "two.csv", extra_column="backprop (444)")
    with pytest.raises(ExportError, match=r"2 assignment columns named 'backprop'.*"
                                          r"Quiz 1 \(111\); Backprop \(222\); backprop \(444\)"):
        commands.export(course, "backprop", "canvas", tmp_path / "x.csv", template=ambiguous)
    by_id = with_settings(course, CanvasExport={"assignment_id": "444"})
    with pytest.raises(ExportError, match=r"'Points Possible' cell of 'backprop \(444\)' is "
                                          r"'' \(not a number\)"):  # blank: never guessed
        commands.export(by_id, "backprop", "canvas", tmp_path / "y.csv", template=ambiguous)
    by_id = with_settings(course, CanvasExport={"assignment_id": "444", "points_possible": 10.0})
    path = commands.export(by_id, "backprop", "canvas", tmp_path / "y.csv", template=ambiguous)
    rows = read_csv(path)[1]
    at = rows[0].index("backprop (444)")
    assert {row[1]: row[at] for row in rows[2:]}["10001"] == "10"  # the setting's points
    renamed = canvas_template(tmp_path / "renamed.csv", backprop_column="Homework 3 (222)")
    with pytest.raises(ExportError, match=r"no assignment column named 'backprop'.*"
                                          r"Homework 3 \(222\)"):
        commands.export(course, "backprop", "canvas", tmp_path / "z.csv", template=renamed)
    named = with_settings(course, CanvasExport={"assignment_name": "Homework 3"})
    assert commands.export(named, "backprop", "canvas", tmp_path / "z.csv", template=renamed)
    assert not (tmp_path / "x.csv").exists()  # nothing half-written
    moodle = tmp_path / "moodle.csv"
    moodle.write_text("Identifier,Full name,Grade\nParticipant 1,A,\n")
    with pytest.raises(ExportError, match="moodle.csv is not a Canvas gradebook export"):
        commands.export(course, "backprop", "canvas", tmp_path / "w.csv", template=moodle)


def test_canvas_without_template_needs_the_configured_id(graded, tmp_path) -> None:
    course, expected = graded["course"], graded["expected"]
    with pytest.raises(ExportError, match="c.CanvasExport.assignment_id"):
        commands.export(course, "backprop", "canvas", tmp_path / "x.csv")
    configured = with_settings(course, CanvasExport={
        "assignment_id": "222", "assignment_name": "Backprop", "points_possible": 20.0})
    had_bom, rows = read_csv(commands.export(configured, "backprop", "canvas",
                                             tmp_path / "c.csv"))
    assert not had_bom
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                       "Backprop (222)"]
    assert rows[1] == ["    Points Possible", "", "", "", "", "20"]
    by_id = {row[1]: row for row in rows[2:]}
    assert set(by_id) == set(expected)
    assert by_id["10011"][0] == by_id["10010"][0] == "Smith, John"
    assert by_id["10040"][0] == "Missing, Mo" and by_id["10060"][0] == "10060"
    for student, score in expected.items():
        assert float(by_id[student][5]) == score * 2


def moodle_worksheet(path: Path) -> Path:
    header = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
              "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
              "Feedback comments"]
    rows = [header]
    for student, (first, last, email) in {**ROSTER, "77777": ("Una", "Known", "u@x")}.items():
        rows.append([f"Participant {student}", f"{first} {last}", email,
                     "Submitted for grading", "", "100.00", "Yes",
                     "Thursday, 19 November 2026, 10:00 AM", "-", ""])
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def test_moodle_worksheet_gets_grades_scaled_and_a_one_line_comment(graded, tmp_path) -> None:
    course, expected = graded["course"], graded["expected"]
    template = moodle_worksheet(tmp_path / "worksheet.csv")
    path = commands.export(course, "backprop", "moodle", tmp_path / "m.csv", template=template,
                           feedback_comments=True)
    had_bom, rows = read_csv(path)
    assert not had_bom and rows[0] == read_csv(template)[1][0]
    by_id = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    for student in ROSTER:
        row = by_id[f"Participant {student}"]
        assert float(row["Grade"]) == expected[student] * 10, student
        assert "\n" not in row["Feedback comments"]
        assert not row["Feedback comments"].startswith(("=", "+", "-", "@"))
    assert by_id["Participant 10020"]["Grade"] == "75"
    assert "late penalty 2.5" in by_id["Participant 10020"]["Feedback comments"]
    assert "manual adjustment 3, extra credit 0.5" in \
        by_id["Participant 10030"]["Feedback comments"]
    assert by_id["Participant 10040"]["Feedback comments"].startswith("0/10 (missing)")
    assert by_id["Participant 77777"]["Grade"] == ""  # not ours: as it was
    assert by_id["Participant 10001"]["Last modified (grade)"] == "-"  # as Moodle gave it
    plain = commands.export(course, "backprop", "moodle", tmp_path / "p.csv", template=template)
    assert all(row[-1] == "" for row in read_csv(plain)[1][1:])  # comments only when asked
    with pytest.raises(ExportError, match="--template"):
        commands.export(course, "backprop", "moodle", tmp_path / "q.csv")


def write_lms_json(course: Course, student: str, **meta: object) -> None:
    """The record an LMS download leaves (signed by the course), or, without `meta`, a broken
    one: then the student's feedback is named as nbgrader lays it out."""
    folder = course.submitted_dir(student, "backprop")
    folder.mkdir(parents=True, exist_ok=True)
    if meta:
        write_lms_record(course, student, "backprop", meta)
    else:
        (folder / "lms.json").write_text("{not json")


def canvas_would_match(name: str) -> tuple[str, str]:
    """canvas-lms Assignment#infer_comment_context_from_filename: the first two all-digit
    parts of the base name split on `_` are the user id and the submitted file's id."""
    numbers = [part for part in name.split("/")[-1].split("_") if re.fullmatch(r"\d+", part)]
    return numbers[0], numbers[1]


def moodle_would_match(name: str) -> tuple[str, str, str, str]:
    """Moodle's assignfeedback_file_zip_importer: explode('_', part, 5) on the first path part."""
    full_name, participant, plugin_type, plugin, *_ = name.split("/")[0].split("_", 4)
    return full_name, participant, plugin_type, plugin


def test_feedback_zip_names_are_what_each_lms_matches(graded, tmp_path) -> None:
    course = graded["course"]
    base = {"late": False, "submitted_at": None}
    write_lms_json(course, "10001", lms="canvas", name="smithalice", user_id="10001",
                   submission_id="678901", file="smithalice_10001_678901_backprop.ipynb", **base)
    write_lms_json(course, "10020", lms="canvas", name="latelarry", user_id="10020",
                   submission_id="678950",
                   file="sub/latelarry_LATE_10020_678950_backprop-1.ipynb", **base)
    write_lms_json(course, "10011", lms="canvas", name="../smith_john\x1b[31m",
                   user_id="10011", submission_id="678911", file="renamed by hand.ipynb",
                   **base)
    write_lms_json(course, "10010", lms="moodle", name="John Smith", user_id="10010",
                   submission_id=None, file="John Smith_10010_assignsubmission_file_/b.ipynb",
                   **base)
    write_lms_json(course, "10060")  # not JSON: this one student is left out
    out = tmp_path / "feedback.zip"
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "feedback-zip",
                           "backprop", "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        page = archive.read("smithalice_10001_678901_backprop_feedback.html")
    assert page == (course.feedback_dir("10001", "backprop") / "backprop.html").read_bytes()
    assert sorted(names) == sorted([
        "smithalice_10001_678901_backprop_feedback.html",  # the downloaded name kept
        "latelarry_LATE_10020_678950_backprop-1_feedback.html",
        "smith-john_10011_678911_feedback.html",  # renamed download: rebuilt from lms.json
        "John Smith_10010_assignsubmission_file_/feedback.html",
        "10030/backprop/feedback.html",  # no lms.json: nbgrader's layout
        "10060/backprop/feedback.html",  # its lms.json is no record of ours: the same
    ])
    for name in names:
        assert ".." not in name and "\\" not in name and not name.startswith("/")
        assert not re.search(r"[\x00-\x1f\x7f\u202e]", name)
    for name in names:
        if name.startswith(("10030/", "10060/")):
            continue
        if name.endswith("_feedback.html"):
            user, file_id = canvas_would_match(name)
            assert (user, file_id) in {("10001", "678901"), ("10020", "678950"),
                                       ("10011", "678911")}
        else:
            full_name, participant, plugin_type, plugin = moodle_would_match(name)
            assert participant == "10010" and full_name == "John Smith"
            assert (plugin_type, plugin) == ("assignsubmission", "file")


def test_feedback_names_are_path_safe_whatever_lms_json_says() -> None:
    from autograder.lms.feedback_zip import canvas_name, moodle_name, safe_part

    hostile = "../Mary_\x1b[31mManual\u202e/.."
    assert moodle_name({"name": hostile, "user_id": "10030"}, "10030") == \
        "Mary-Manual_10030_assignsubmission_file_/feedback.html"
    assert safe_part("..") == "-" and safe_part("a/../b\\c") == "a-.-b-c"
    assert canvas_name({"name": "12345", "user_id": "10001", "submission_id": "9",
                        "file": "x.ipynb"}, "10001") == "student_10001_9_feedback.html"
    for bad in ({"user_id": "../1", "submission_id": "9"}, {"user_id": "1"}):
        with pytest.raises(ValueError):
            canvas_name(bad, "x")
    with pytest.raises(ValueError, match="participant id"):
        moodle_name({"name": "A", "user_id": "abc"}, "abc")


@contextmanager
def graded_by_hand_again(course: Course, student: str, manual: float,
                         extra: float) -> Iterator[None]:
    """A TA changes a student's hand grade and extra credit in formgrader (nbgrader's
    Gradebook API, as its score boxes do) after grading; the fixture's values come back after."""
    def put(manual_score: float, extra_credit: float) -> None:
        with Gradebook(course.db_url, course_id=course.course_id) as gradebook, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gradebook.find_grade(MANUAL[0], "backprop", "backprop", student).manual_score = \
                manual_score
            gradebook.find_grade(EXTRA[0], "backprop", "backprop", student).extra_credit = \
                extra_credit
            gradebook.db.commit()

    put(manual, extra)
    try:
        yield
    finally:
        put(MANUAL[1], EXTRA[1])


# 10030 graded 6 / 10 (0 on check_train); by hand: check_train 3, 1 extra credit.
BY_HAND = ("Score: 10 / 10 (100 %)", "Autograded: 6 / 10",
           "Manual adjustment by your grader: +3", "Extra credit: +1")


def test_feedback_zip_shows_the_final_score_of_hand_grading_after_grading(
        graded, tmp_path) -> None:
    course = graded["course"]
    page = course.feedback_dir("10030", "backprop") / "backprop.html"
    with graded_by_hand_again(course, "10030", manual=3.0, extra=1.0):
        stale = page.read_text()
        assert "Score: 10 / 10" not in stale  # written before the TA's grades
        # A page nobody's stored result is behind (Mo submitted nothing): never sent.
        orphan = course.feedback_dir("10040", "backprop")
        orphan.mkdir(parents=True)
        (orphan / "backprop.html").write_text("<p>Score: 10 / 10</p>")
        out = tmp_path / "feedback.zip"
        done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "feedback-zip",
                               "backprop", "--output", str(out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        ours = final_scores(course, "backprop")
        with zipfile.ZipFile(out) as archive:
            zipped = archive.read("10030/backprop/feedback.html").decode()
            assert not any("10040" in name for name in archive.namelist())
    assert "skipped: 10040: no stored result of this grader" in done.stdout
    assert [row.score for row in ours if row.student_id == "10030"] == [10.0]  # as exported
    markdown = (course.feedback_dir("10030", "backprop") / "backprop.md").read_text()
    for line in BY_HAND:
        assert line in zipped and line in markdown, line
    assert zipped == page.read_text()  # the files under feedback/ agree with the zip
    larry = (course.feedback_dir("10020", "backprop") / "backprop.md").read_text()
    assert "Score: 7.5 / 10 (75 %)" in larry and "Late penalty: 2.5 points off" in larry
    alice = (course.feedback_dir("10001", "backprop") / "backprop.md").read_text()
    assert "Score: 10 / 10 (100 %)" in alice and "Autograded" not in alice


def test_grading_again_writes_feedback_with_the_hand_grades_kept(graded) -> None:
    """`autograder grade` (and formgrader's Autograde button, which runs it) after a TA's hand
    grading: the feedback written then shows the final score, the hand grades in."""
    course = graded["course"]
    [mary] = commands.grade(course, "backprop", student_id="10030", regrade=True, workers=1)
    assert mary.score == 6.0
    markdown = (course.feedback_dir("10030", "backprop") / "backprop.md").read_text()
    for line in ("Score: 9.5 / 10 (95 %)", "Autograded: 6 / 10",
                 "Manual adjustment by your grader: +3", "Extra credit: +0.5"):
        assert line in markdown, line


def test_generate_feedback_shows_the_final_score_of_hand_grading(graded, tmp_path) -> None:
    """formgrader's Generate Feedback button: nbgrader's generate_feedback, with our
    FeedbackExporter (the course's nbgrader_config.py), renders the same page as the zip."""
    course = graded["course"]
    page = course.feedback_dir("10030", "backprop") / "backprop.html"
    with graded_by_hand_again(course, "10030", manual=3.0, extra=1.0):
        page.unlink()
        run_nbgrader(course, "generate_feedback", "--force", "backprop", "--student=10030")
        generated = page.read_text()
        markdown = page.with_suffix(".md").read_text()
        for line in BY_HAND:
            assert line in generated and line in markdown, line
        out = tmp_path / "feedback.zip"
        done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "feedback-zip",
                               "backprop", "--output", str(out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with zipfile.ZipFile(out) as archive:
            assert archive.read("10030/backprop/feedback.html").decode() == generated


def _with_points(template: Path, points: str, column: str = "Backprop (222)") -> Path:
    """The template with its "Points Possible" cell of `column` set to `points`."""
    _, rows = read_csv(template)
    rows[1][rows[0].index(column)] = points
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    template.write_text(BOM + buffer.getvalue(), encoding="utf-8")
    return template


@pytest.mark.parametrize(("points", "problem"), [("0.00", "0"), ("", "not a number"),
                                                 ("(read only)", "not a number")])
def test_canvas_points_possible_zero_or_unreadable_is_refused(graded, tmp_path, points,
                                                              problem) -> None:
    """0 would fill every student with 0, a blank would upload scores out of our 10 to an
    assignment out of 20: refused, naming the cell and the setting; nothing written."""
    course = graded["course"]
    template = _with_points(canvas_template(tmp_path / "gradebook.csv"), points)
    out = tmp_path / "filled.csv"
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "export", "backprop",
                           "--format", "canvas", "--template", str(template), "--output",
                           str(out)], capture_output=True, text=True)
    assert done.returncode == 2 and not out.exists()
    assert (f"gradebook.csv, line 2: the 'Points Possible' cell of 'Backprop (222)' is "
            f"{points!r} ({problem})") in done.stderr
    assert "c.CanvasExport.points_possible" in done.stderr
    configured = with_settings(course, CanvasExport={"points_possible": 20.0})
    rows = read_csv(commands.export(configured, "backprop", "canvas", out, template=template))[1]
    assert {row[1]: row[6] for row in rows[2:]}["10030"] == "19"  # the setting: out of 20


def test_canvas_muted_points_are_read_and_moodle_zero_maximum_is_refused(graded,
                                                                         tmp_path) -> None:
    course = graded["course"]
    muted = _with_points(canvas_template(tmp_path / "muted.csv"), "20 (muted)")
    rows = read_csv(commands.export(course, "backprop", "canvas", tmp_path / "m.csv",
                                    template=muted))[1]
    assert {row[1]: row[6] for row in rows[2:]}["10030"] == "19"  # 9.5 of 10 is 19 of 20
    worksheet = moodle_worksheet(tmp_path / "worksheet.csv")
    worksheet.write_text(worksheet.read_text().replace("100.00", "0.00"))
    with pytest.raises(ExportError, match=r"worksheet.csv, line 2: 'Maximum Grade' is '0.00', "
                                          r"not a positive number.*Type to 'Point'"):
        commands.export(course, "backprop", "moodle", tmp_path / "w.csv", template=worksheet)
    assert not (tmp_path / "w.csv").exists()
    with pytest.raises(ExportError, match="points_possible = 0.0 would give every student 0"):
        commands.export(with_settings(course, CanvasExport={"assignment_id": "222",
                                                            "points_possible": 0.0}),
                        "backprop", "canvas", tmp_path / "c.csv")


def test_template_cells_that_cannot_be_formulas_stay_as_given(graded, tmp_path) -> None:
    """A lone "-" and a number such as "-2" are written back unchanged (the LMS sees no
    change there); anything else starting = + - @ still gets its quote."""
    course = graded["course"]
    template = canvas_template(tmp_path / "gradebook.csv")
    _, rows = read_csv(template)
    alice = rows[3]
    alice[5], alice[7], alice[2] = "-", "-2", "+1"  # Quiz 1, Essay, SIS User ID
    rows[4][7] = "@SUM(A1)"
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    template.write_text(buffer.getvalue(), encoding="utf-8")
    written = read_csv(commands.export(course, "backprop", "canvas", tmp_path / "f.csv",
                                       template=template))[1]
    by_id = {row[1]: row for row in written[2:]}
    assert (by_id["10001"][5], by_id["10001"][7], by_id["10001"][2]) == ("-", "-2", "'+1")
    assert by_id["10010"][7] == "'@SUM(A1)" and by_id["10050"][3] == "'-dropped"


def test_a_template_that_matches_nobody_is_written_and_said_so(graded, tmp_path) -> None:
    course = graded["course"]
    template = canvas_template(tmp_path / "other-course.csv")
    template.write_text(template.read_text(encoding="utf-8").replace(",100", ",900"),
                        encoding="utf-8")
    out = tmp_path / "filled.csv"
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "export", "backprop",
                           "--format", "canvas", "--template", str(template), "--output",
                           str(out)], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "0 score(s) filled (0 of our 7 student(s) matched in the template)" in done.stdout
    assert "WARNING: the template matched none of our 7 student(s)" in done.stdout
    assert read_csv(out)[1][:-1] == read_csv(template)[1][:-1]  # kept, as the LMS gave it
    assert read_csv(out)[1][-1][0].startswith("'=HYPERLINK")  # but never a formula


def test_feedback_zip_with_nothing_graded_is_refused(tmp_path) -> None:
    course = make_course(tmp_path)
    out = tmp_path / "feedback.zip"
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "feedback-zip",
                           "backprop", "--output", str(out)], capture_output=True, text=True)
    assert done.returncode == 2 and not out.exists()
    assert "no feedback to zip: grade the assignment first" in done.stderr


def test_feedback_zip_waits_for_the_end_of_the_services_exam_mode(graded, tmp_path) -> None:
    """Exam mode hides results from students until the due date (plus the latest extension
    and the late window): a zip uploaded to the LMS before then would show them. Refused,
    naming until when; `--force` zips it all the same; once past, it just zips."""
    from sqlalchemy import create_engine, text

    root = tmp_path / "course"
    shutil.copytree(graded["course"].root, root)
    with (root / "nbgrader_config.py").open("a") as config:
        config.write('\nc.AssignmentPolicy.results_shown = "exam"\n'
                     "c.AssignmentPolicy.late_window_hours = 0\n")

    def due(when: str) -> None:
        engine = create_engine(f"sqlite:///{root / 'gradebook.db'}")
        with engine.begin() as db:
            db.execute(text("UPDATE assignment SET duedate = :due WHERE name = 'backprop'"),
                       {"due": when})
        engine.dispose()

    def feedback_zip(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*AUTOGRADER, "--course", str(root), "feedback-zip", "backprop",
                               "--output", str(tmp_path / "feedback.zip"), *extra],
                              capture_output=True, text=True)

    due("2099-01-01 00:00:00.000000")
    refused = feedback_zip()
    assert refused.returncode == 2 and not (tmp_path / "feedback.zip").exists()
    assert "exam mode" in refused.stderr and "2099-01-01T00:00:00+00:00" in refused.stderr
    assert feedback_zip("--force").returncode == 0 and (tmp_path / "feedback.zip").is_file()
    (tmp_path / "feedback.zip").unlink()
    due("2020-01-01 00:00:00.000000")
    done = feedback_zip()
    assert done.returncode == 0, done.stderr
