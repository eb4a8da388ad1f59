"""formgrader side by side: its Autograde and Generate Feedback buttons, pressed through a
running formgrader's HTTP API after `autograder grade`, leave our scores (gradebook.db
included), our stored results and our feedback standing, and run no student code outside
the sandbox."""

from __future__ import annotations

import csv
import http.cookiejar
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat

from autograder import commands
from autograder.author import solution_answers, with_answers
from autograder.course import Course
from autograder.kept_notebook import REPORT_HEADING
from autograder.store import load_results
from tests.conftest import REPO, make_course, write_submissions
from tests.test_jupyterlab import _free_port

TOKEN = uuid.uuid4().hex
STAMP = "2026-11-20 12:00:00.000000 UTC"
HARDCODED = '''def chain_rule(x_value):
    x = torch.tensor([float(x_value)], requires_grad=True)
    y = x ** 2
    z = y + 3
    loss = z ** 2
    x.grad = torch.tensor([56.0])  # the lesson's answer, written by hand
    return x, y, z, loss
'''
MISSING_ZERO_GRAD = '''def train_step(model, optimizer, criterion, X, y):
    loss = criterion(model(X), y)
    loss.backward()
    optimizer.step()
    return loss
'''


class Formgrader:
    """A Jupyter server with nbgrader's formgrader on the course, spoken to as its page's
    JavaScript does: the token, and the `_xsrf` cookie echoed in X-XSRFToken."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        scratch.mkdir(parents=True, exist_ok=True)
        self.log = scratch / "jupyter.log"
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(scratch / "config"),
               "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"),
               "JUPYTER_DATA_DIR": str(scratch / "data")}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                 f"--port={self.port}", "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
                 f"--ServerApp.root_dir={root}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
                env=env)
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def wait_ready(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                status, _ = self.request("GET", "/formgrader/api/status", timeout=5)
                if status == 200 and self.xsrf():
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, \
                f"formgrader did not start in {seconds} s:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)

    def xsrf(self) -> str | None:
        return next((cookie.value for cookie in self.jar if cookie.name == "_xsrf"), None)

    def request(self, method: str, path: str, body: object = None,
                timeout: float = 300) -> tuple[int, bytes]:
        headers = {"Authorization": f"token {TOKEN}"}
        if self.xsrf():
            headers["X-XSRFToken"] = self.xsrf()
        data = None if body is None else json.dumps(body).encode()
        if method != "GET" and data is None:
            data = b""
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, method: str, path: str, body: object = None) -> object:
        status, data = self.request(method, path, body)
        assert status == 200, f"{method} {path}: {status} {data[:2000]!r}"
        return json.loads(data)

    def press(self, path: str) -> dict:
        """A button: POST, and nbgrader's answer must say it succeeded."""
        answer = self.json("POST", path)
        assert answer["success"], f"{path}: {answer.get('error')}\n{answer.get('log')}"
        return answer

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def gradebook_state(course: Course) -> dict[str, dict]:
    """Per student, what nbgrader's Gradebook API reads: every grade row, the notebook's
    score and late penalty, the submission time."""
    from nbgrader.api import Gradebook

    state = {}
    with Gradebook(course.db_url, course.course_id) as gradebook:
        for submission in gradebook.assignment_submissions("backprop"):
            notebook = gradebook.find_submission_notebook("backprop", "backprop",
                                                          submission.student.id)
            state[submission.student.id] = {
                "grades": {grade.name: (grade.auto_score, grade.manual_score,
                                        grade.extra_credit, grade.needs_manual_grade)
                           for grade in notebook.grades},
                "score": notebook.score,
                "late_penalty": notebook.late_submission_penalty,
                "timestamp": submission.timestamp,
            }
    return state


def stored(course: Course) -> dict[str, dict]:
    return {result.student_id: result.to_dict() for result in load_results(course.root,
                                                                           "backprop")}


def feedback(course: Course, student: str) -> str:
    return (course.feedback_dir(student, "backprop") / "backprop.html").read_text()


def grade_cell_outputs(course: Course, student: str) -> dict[str, str]:
    kept = nbformat.read(course.autograded_dir(student, "backprop") / "backprop.ipynb",
                         as_version=4)
    return {cell.metadata.nbgrader["grade_id"]: "".join(o.get("text", "") for o in cell.outputs)
            for cell in kept.cells
            if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code"}


def test_formgrader_buttons_leave_our_grades_standing(tmp_path: Path) -> None:
    # A course of its own: formgrader writes its gradebook.db.
    (tmp_path / "course").mkdir()
    course = make_course(tmp_path / "course")
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    solution = solution_answers(nbformat.read(REPO / "source" / "backprop" / "backprop.ipynb",
                                              as_version=4))
    marker = Path("/tmp") / f"formgrader-marker-{uuid.uuid4().hex}"
    part1_only = {"forward_backward": solution["forward_backward"]}
    submitted = course.root / "submitted"
    write_submissions(submitted, {
        "ace": with_answers(release, solution),
        "hardcoded": with_answers(release, {**solution, "chain_rule": HARDCODED}),
        "manual": with_answers(release, {**solution, "train_step": MISSING_ZERO_GRAD}),
        "partial": with_answers(release, part1_only),
    })
    for student in ("ace", "hardcoded", "manual", "partial"):
        (submitted / student / "backprop" / "timestamp.txt").write_text(STAMP)
    ours = {r.student_id: r.score for r in commands.grade(course, "backprop", workers=1)}
    assert ours == {"ace": 10, "hardcoded": 8, "manual": 6, "partial": 3}

    # Submitted after our run, never graded by us: its answer writes a file on whatever
    # machine runs it, then does Part 1 right.
    write_submissions(submitted, {"late-comer": with_answers(release, {
        "forward_backward": f"open({str(marker)!r}, 'w').write('ran')\n"
                            + solution["forward_backward"]})})
    (submitted / "late-comer" / "backprop" / "timestamp.txt").write_text(STAMP)

    server = Formgrader(course.root, tmp_path / "jupyter")
    try:
        server.wait_ready()
        # A TA grades Part 3 of "manual" by hand in formgrader: 2 points and 1 extra.
        notebook_id = next(s["id"] for s in server.json(
            "GET", "/formgrader/api/submitted_notebooks/backprop/backprop")
            if s["student"] == "manual")
        grades = server.json("GET", f"/formgrader/api/grades?submission_id={notebook_id}")
        part3 = next(g for g in grades if g["name"] == "check_train")
        server.json("PUT", f"/formgrader/api/grade/{part3['id']}",
                    {"manual_score": 2, "extra_credit": 1})

        before = gradebook_state(course)
        results_before = stored(course)
        feedback_before = {s: feedback(course, s) for s in ("ace", "hardcoded", "manual")}

        for student in ("hardcoded", "manual", "late-comer"):
            server.press(f"/formgrader/api/submission/backprop/{student}/autograde")
        server.press("/formgrader/api/assignment/backprop/generate_feedback")
        server.press("/formgrader/api/assignment/backprop/hardcoded/generate_feedback")

        # What formgrader shows a TA for "hardcoded": why Part 2 got 1 / 3.
        hardcoded_id = next(s["id"] for s in server.json(
            "GET", "/formgrader/api/submitted_notebooks/backprop/backprop")
            if s["student"] == "hardcoded")
        status, page = server.request("GET", f"/formgrader/submissions/{hardcoded_id}/")
        assert status == 200
        assert f"{REPORT_HEADING}: 1 / 3 points" in page.decode()
        assert "x.grad is 56 whatever x is" in page.decode()
    finally:
        server.close()

    # No student code ran outside the sandbox: the late-comer's file is on no host disk,
    # and yet their Part 1 ran to the end in the sandbox (3 points).
    assert not marker.exists()

    after = gradebook_state(course)
    # Reused, unchanged: every grade row, the manual score and extra credit included.
    for student in ("ace", "hardcoded", "manual", "partial"):
        assert after[student] == before[student], student
    assert after["manual"]["grades"]["check_train"] == (0.0, 2.0, 1.0, False)
    assert {s: after[s]["score"] for s in after} == {
        "ace": 10, "hardcoded": 8, "manual": 9, "partial": 3, "late-comer": 3}
    # nbgrader's own scoring would give "hardcoded" its self-check's 3 points for Part 2.
    assert after["hardcoded"]["grades"]["check_chain_rule"][0] == 1

    results_after = stored(course)
    assert {s: results_after[s] for s in results_before} == results_before
    assert results_after["late-comer"]["status"] == "graded"
    assert sum(t["points"] for t in results_after["late-comer"]["tests"]) == 3

    for student in ("ace", "hardcoded"):
        assert feedback(course, student) == feedback_before[student], student
    # "manual"'s feedback was written before the TA's grades: now it has them, as exports do.
    assert "Score: 6 / 10" in feedback_before["manual"]
    for line in ("Score: 9 / 10 (90 %)", "Autograded: 6 / 10",
                 "Manual adjustment by your grader: +2", "Extra credit: +1"):
        assert line in feedback(course, "manual"), line
    assert "x.grad is 56 whatever x is" in feedback(course, "hardcoded")
    assert "Score: 8 / 10" in feedback(course, "hardcoded")
    assert "Score: 3 / 10" in feedback(course, "late-comer")
    assert "not done yet" in feedback(course, "late-comer")
    assert (course.feedback_dir("hardcoded", "backprop") / "backprop.md").is_file()

    # The kept notebook (rewritten by nbgrader's Autograde) shows each grade cell's tests.
    shown = grade_cell_outputs(course, "hardcoded")
    assert shown["check_chain_rule"].startswith(f"{REPORT_HEADING}: 1 / 3 points\n")
    assert "FAIL" in shown["check_chain_rule"]
    assert "x.grad is 56 whatever x is" in shown["check_chain_rule"]
    assert "PASS" in shown["check_forward_backward"]

    # nbgrader's own export agrees.
    done = subprocess.run([sys.executable, "-m", "nbgrader", "export",
                           f"--CsvExportPlugin.to={tmp_path / 'grades.csv'}"],
                          cwd=course.root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "grades.csv", newline="") as handle:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(handle)}
    assert exported == {"ace": 10, "hardcoded": 8, "manual": 9, "partial": 3, "late-comer": 3}

    # Our grade run after the buttons changes nothing in gradebook.db: the two agree.
    commands.grade(course, "backprop", workers=1)
    assert gradebook_state(course) == after
