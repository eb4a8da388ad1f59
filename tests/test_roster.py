"""The roster is nbgrader's gradebook.db `student` table: imported from nbgrader's student CSV,
Canvas's gradebook CSV and Moodle's grading worksheet, read back with nbgrader's own API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder.course import Course
from autograder.release import put_nbgrader_tools_on_path
from autograder.roster import RosterError, RosterStudent, import_roster, roster_students
from tests.conftest import AUTOGRADER, grade_answers, make_course

CANVAS = (
    "\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,Quiz 1 (678800),backprop (678901),"
    "Current Score,Final Score\n"
    "    Points Possible,,,,,5.00,10.00,(read only),(read only)\n"
    '"Smith, Alice",10001,S1001,asmith,Section 1,4.00,,80.00,80.00\n'
    '"Smith, John",10010,,jsmith1,Section 1,,,,\n'
    '"Smith, John",10011,,jsmith2,Section 2,,,,\n'
    '"Student, Test",10099,,3f1b6a0d2b,Section 1,,,,\n'
)
MOODLE = (
    "Identifier,Full name,Email address,Status,Grade,Maximum Grade,Grade can be changed,"
    "Last modified (submission),Last modified (grade),Feedback comments\n"
    "Participant 12345,Alice Smith,alice@example.edu,Submitted for grading,,10.00,Yes,"
    '"Monday, 12 January 2026, 10:00 AM",-,\n'
    "Participant 12346,Bo van der Berg,bo@example.edu,No submission,,10.00,Yes,-,-,\n"
)
NBGRADER = (
    "id,first_name,last_name,email,lms_user_id\n"
    "alice,Alice,Smith,alice@example.edu,10001\n"
    "eve,\x1b[31mEve\u202e,Evans,,\n"
)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Course:
    return make_course(tmp_path_factory.mktemp("roster"))


def _students(course: Course) -> dict[str, RosterStudent]:
    return {student.id: student for student in roster_students(course)}


def _nbgraders_view(course: Course, student_id: str) -> tuple:
    with Gradebook(course.db_url) as gradebook:
        student = gradebook.find_student(student_id)
        return (student.first_name, student.last_name, student.email, student.lms_user_id)


def test_canvas_gradebook_csv_with_bom_and_test_student(course: Course, tmp_path: Path) -> None:
    path = tmp_path / "canvas.csv"
    path.write_text(CANVAS, encoding="utf-8")
    done = subprocess.run([*AUTOGRADER, "--course", str(course.root), "roster", "import",
                           str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "imported 3 students" in done.stdout and "(canvas)" in done.stdout
    assert "skipped line 6: Canvas's test student" in done.stdout
    assert _nbgraders_view(course, "10001") == ("Alice", "Smith", "asmith", "10001")
    # two students with the same name, told apart by their Canvas ids
    assert _nbgraders_view(course, "10010") == ("John", "Smith", "jsmith1", "10010")
    assert _nbgraders_view(course, "10011") == ("John", "Smith", "jsmith2", "10011")
    assert "10099" not in _students(course)
    listed = subprocess.run([*AUTOGRADER, "--course", str(course.root), "roster"],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "10011 | Smith | John | jsmith2 | 10011" in listed.stdout


def test_moodle_grading_worksheet(course: Course, tmp_path: Path) -> None:
    path = tmp_path / "moodle.csv"
    path.write_text(MOODLE, encoding="utf-8")
    done = import_roster(course, path)
    assert (done.kind, len(done.students), done.skipped) == ("moodle", 2, [])
    assert _nbgraders_view(course, "12345") == ("Alice", "Smith", "alice@example.edu", "12345")
    assert _nbgraders_view(course, "12346") == ("Bo van der", "Berg", "bo@example.edu", "12346")


def test_nbgrader_csv_reads_as_nbgrader_reads_it(course: Course, tmp_path: Path) -> None:
    """The same file through `nbgrader db student import` in an empty course gives the same
    rows (but for the student text we clean)."""
    path = tmp_path / "students.csv"
    clean = NBGRADER.splitlines()[:2]
    path.write_text("\n".join(clean) + "\n", encoding="utf-8")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "nbgrader_config.py").write_text("c = get_config()\n")
    put_nbgrader_tools_on_path()  # nbgrader runs `alembic` to make a new gradebook.db
    done = subprocess.run([AUTOGRADER[0], "-m", "nbgrader", "db", "student", "import",
                           str(path)], cwd=theirs, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import_roster(course, path)
    assert _students(Course.load(theirs))["alice"] == _students(course)["alice"] == \
        RosterStudent("alice", "Alice", "Smith", "alice@example.edu", "10001")
    # student text is cleaned: no terminal escape or bidi override reaches the gradebook
    path.write_text(NBGRADER, encoding="utf-8")
    import_roster(course, path)
    assert _students(course)["eve"] == RosterStudent("eve", "Eve", "Evans", None, None)


def test_upsert_keeps_what_an_empty_cell_does_not_say(course: Course, tmp_path: Path) -> None:
    path = tmp_path / "first.csv"
    path.write_text("id,first_name,last_name,email,lms_user_id\n"
                    "kim,Kim,Lee,kim@example.edu,555\n", encoding="utf-8")
    import_roster(course, path)
    path.write_text("id,first_name,last_name,email,lms_user_id\nkim,Kimberly,,,\n",
                    encoding="utf-8")
    import_roster(course, path)
    assert _students(course)["kim"] == RosterStudent("kim", "Kimberly", "Lee", "kim@example.edu",
                                                     "555")


@pytest.mark.parametrize(("text", "why"), [
    (CANVAS.replace('"Smith, John",10011', '"Smith, John",ten'), "line 5: ID 'ten'"),
    (MOODLE.replace("Participant 12346", "Someone 12346"), "line 3: Identifier 'Someone"),
    (NBGRADER.replace("\neve,", "\n../eve,"), "line 3: '../eve' is not a usable student id"),
    (CANVAS.replace("Section 2,,,,", "Section 2,,,"), "line 5: 8 cells where the header has 9"),
    (CANVAS + '"Smith, Alice",10001,,a,S,,,,\n', "line 7: student 20001 is listed twice"),
])
def test_a_malformed_row_is_named_and_nothing_is_written(course: Course, tmp_path: Path,
                                                         text: str, why: str) -> None:
    path = tmp_path / "roster.csv"
    # good rows first: they must not be written either
    path.write_text(text.replace("10001", "20001").replace("12345", "22345")
                    .replace("alice", "alice2"), encoding="utf-8")
    before = _students(course)
    with pytest.raises(RosterError, match=why.replace("(", r"\(")) as raised:
        import_roster(course, path)
    assert "roster.csv" in str(raised.value)
    assert _students(course) == before


def test_unknown_shape_and_non_utf8_are_refused(course: Course, tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("name,score\nalice,3\n")
    with pytest.raises(RosterError, match="not a roster this reads"):
        import_roster(course, path)
    path.write_bytes("id,first_name\nj\xf6rg,J\xf6rg\n".encode("latin-1"))
    with pytest.raises(RosterError, match="not UTF-8"):
        import_roster(course, path)


def test_a_real_student_named_student_test_has_an_sis_id(course: Course, tmp_path: Path) -> None:
    path = tmp_path / "canvas.csv"
    path.write_text(CANVAS + '"Student, Test",10098,S1098,tstudent,Section 2,,,,\n',
                    encoding="utf-8")
    done = import_roster(course, path)
    assert [item for item in done.skipped if "test student" in item] == \
        ["line 6: Canvas's test student (Student, Test, ID 10099)"]
    assert "10099" not in _students(course)
    assert _nbgraders_view(course, "10098") == ("Test", "Student", "tstudent", "10098")


def _worksheet(path: Path, *rows: tuple[str, str, str]) -> Path:
    """Moodle's grading worksheet: (participant, full name, email) a row."""
    path.write_text(MOODLE.splitlines()[0] + "\n" + "".join(
        f"Participant {participant},{name},{email},Submitted for grading,,10.00,Yes,-,-,\n"
        for participant, name, email in rows), encoding="utf-8")
    return path


def test_a_second_file_never_silently_renames_a_graded_student(course: Course,
                                                               tmp_path: Path) -> None:
    """Canvas's 30001 is Kim O'Brien; a Moodle worksheet's "Participant 30001" is Zed Zulu:
    every change is listed, and a graded student is renamed only with --update."""
    first = tmp_path / "students.csv"
    first.write_text("id,first_name,last_name,email,lms_user_id\n"
                     "30001,Kim,O'Brien,kim@example.edu,30001\n"
                     "30002,Ann,Other,ann@example.edu,30002\n", encoding="utf-8")
    import_roster(course, first)
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    grade_answers(course, release, tmp_path, {"30001": {}})  # 30001 has a graded submission

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*AUTOGRADER, "--course", str(course.root), "roster", "import",
                               *args], capture_output=True, text=True)

    other = _worksheet(tmp_path / "moodle.csv", ("30001", "Zed Zulu", "kim@example.edu"),
                       ("30002", "Ann Others", "ann@example.edu"))
    before = _students(course)
    done = cli(str(other))
    assert done.returncode == 2
    assert "30001: Kim O'Brien -> Zed Zulu" in done.stderr and "--update" in done.stderr
    assert "30002" not in done.stderr  # not graded: a rename it may make
    assert _students(course) == before  # nothing written, 30002's rename neither

    same = _worksheet(tmp_path / "same.csv", ("30001", "kim  o'brien", "kim2@example.edu"),
                      ("30002", "Ann Others", "ann@example.edu"))
    done = cli(str(same))
    assert done.returncode == 0, done.stderr
    assert "changed 30001: email kim@example.edu -> kim2@example.edu" in done.stdout
    assert "changed 30002: Ann Other -> Ann Others" in done.stdout
    kim = _students(course)["30001"]
    assert (kim.first_name, kim.last_name, kim.email) == ("Kim", "O'Brien", "kim2@example.edu")

    done = cli(str(other), "--update")
    assert done.returncode == 0, done.stderr
    assert "changed 30001: Kim O'Brien -> Zed Zulu; email kim2@example.edu -> kim@example.edu" \
        in done.stdout
    assert _nbgraders_view(course, "30001") == ("Zed", "Zulu", "kim@example.edu", "30001")
