"""The cheat corpus: each cheat wraps an honest wrong answer (no zero_grad: 6 of 10 points),
scores no more than that answer, and harms nothing: not the other submissions in its batch,
not the course's files, not the gradebook, not the machine."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder.assignment import Assignment
from autograder.author import with_answers
from autograder.engine import grade_submission
from autograder.execute import sandbox
from autograder.execute.warm import WarmSlot
from autograder.results import GRADED
from autograder.submissions import Submission
from tests.conftest import AUTOGRADER, grade_answers, train_step_calling

TIMEOUT = 10.0
HONEST_WRONG = 6  # the score of the missing-zero_grad answer every cheat wraps

NO_ZERO_GRAD = train_step_calling("loss.backward()", "optimizer.step()")

CHEATS = {
    "patch-allclose": "import torch\ntorch.allclose = lambda *a, **k: True\n"
                      "torch.isclose = lambda *a, **k: torch.tensor(True)\n",
    "patch-tensor-methods": (
        "import torch\n"
        "torch.Tensor.__eq__ = lambda self, other: torch.tensor(True)\n"
        "torch.Tensor.__bool__ = lambda self: True\n"
        "torch.Tensor.item = lambda self: 2.0\n"),
    "patch-builtins-print-json": (
        "import builtins, json\n"
        "builtins.abs = lambda x: 0.0\n"
        "builtins.print = lambda *a, **k: None\n"
        "json.dumps = lambda *a, **k: '{\"score\": 10}'\n"
        "json.loads = lambda *a, **k: {'score': 10}\n"),
    "tensor-subclass": (
        "import torch\n"
        "class Always(torch.Tensor):\n"
        "    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        if func.__name__ in ('allclose', 'isclose', 'eq', '__eq__'):\n"
        "            return True\n"
        "        return super().__torch_function__(func, types, args, kwargs or {})\n"
        "_real_linear = torch.nn.Linear.forward\n"
        "def _forward(self, x):\n"
        "    self.weight.data = self.weight.data.as_subclass(Always)\n"
        "    return _real_linear(self, x)\n"
        "torch.nn.Linear.forward = _forward\n"),
    "ast-transformer": (
        "import ast\n"
        "class NoAsserts(ast.NodeTransformer):\n"
        "    def visit_Assert(self, node):\n"
        "        return ast.Pass()\n"
        "get_ipython().ast_transformers.append(NoAsserts())\n"),
    "settrace": (
        "import sys\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'exception' and arg[0] is AssertionError:\n"
        "        frame.f_locals.clear()\n"
        "    return tracer\n"
        "sys.settrace(tracer)\n"),
    "walk-frames-and-gc": (
        "import gc, sys, types\n"
        "names = {'one_step_from_stale_gradients', 'trained_weight_near_two', 'reference_mlp'}\n"
        "found = [o for o in gc.get_objects()\n"
        "         if isinstance(o, types.FunctionType) and o.__name__ in names]\n"
        "frame, depth = sys._getframe(), 0\n"
        "while frame is not None:\n"
        "    found += [v for v in frame.f_globals.values() if getattr(v, '__hidden_test__', 0)]\n"
        "    frame, depth = frame.f_back, depth + 1\n"
        "print('CHEAT found tests:', len(found), 'in', depth, 'frames')\n"),
    "fake-results-then-exit": (
        "import os\n"
        "print('All tests passed. Score: 10/10')\n"
        "try:\n"
        "    open(os.path.join(os.environ['HOME'], '..', 'out', 'progress.txt'), 'w')"
        ".write('finished')\n"
        "except OSError:\n"
        "    pass\n"
        "os._exit(0)\n"),
    "read-course-files": (
        "import os\n"
        "for path in ['../../source/backprop/backprop.ipynb',\n"
        "             '{course}/source/backprop/backprop.ipynb',\n"
        "             '{course}/hidden_tests/backprop/tests.py', '{course}/gradebook.db',\n"
        "             '{course}/submitted/honest/backprop/backprop.ipynb']:\n"
        "    try:\n"
        "        print('CHEAT read', path, open(path, 'rb').read()[:5000])\n"
        "    except OSError as error:\n"
        "        print('CHEAT blocked', type(error).__name__)\n"),
    "write-gradebook": (
        "import sqlite3\n"
        "try:\n"
        "    db = sqlite3.connect('{course}/gradebook.db')\n"
        "    db.execute('update grade set auto_score = 100')\n"
        "    db.commit()\n"
        "    print('CHEAT wrote the gradebook')\n"
        "except Exception as error:\n"
        "    print('CHEAT blocked', type(error).__name__)\n"
        "try:\n"
        "    open('{course}/pwned.txt', 'w').write('x')\n"
        "    print('CHEAT wrote the course')\n"
        "except OSError as error:\n"
        "    print('CHEAT blocked', type(error).__name__)\n"),
    "sockets": (
        "import socket\n"
        "for host in ['127.0.0.1', '10.0.0.1']:\n"
        "    try:\n"
        "        socket.create_connection((host, 22), timeout=2)\n"
        "        print('CHEAT connected to', host)\n"
        "    except OSError as error:\n"
        "        print('CHEAT blocked', host, type(error).__name__)\n"),
    "fork-bomb": (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"),
    "memory-bomb": "hog = bytearray(8 * 1024 ** 3)\n",
    # a user namespace of its own: the way to mounts and to much of the kernel's surface
    "new-user-namespace": (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "failed = libc.unshare(0x10000000 | 0x00020000) != 0  # CLONE_NEWUSER | CLONE_NEWNS\n"
        "print('CHEAT unshare', 'refused' if failed else 'allowed', ctypes.get_errno())\n"),
    # each process stays under its own address-space limit; together they would not
    "many-processes-memory-bomb": (
        "import os, signal, time\n"
        "children = []\n"
        "for _ in range(8):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        hog = bytearray(b'x') * (400 * 1024 ** 2)\n"
        "        time.sleep(3)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "ends = [os.waitpid(pid, 0)[1] for pid in children]\n"
        "held = sum(os.WIFEXITED(end) and os.WEXITSTATUS(end) == 0 for end in ends)\n"
        "killed = sum(os.WIFSIGNALED(end) and os.WTERMSIG(end) == signal.SIGKILL for end in ends)\n"
        "print('CHEAT held', held, 'killed', killed)\n"),
    "infinite-loop": "while True:\n    pass\n",
    "sleep-forever": "import time\ntime.sleep(10 ** 6)\n",
    "setsid-escape": (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(10 ** 6)\n"
        "    os._exit(0)\n"),
    "see-and-signal-others": (
        "import os, signal\n"
        "visible = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "print('CHEAT sees', len(visible), 'processes')\n"
        "os.kill(-1, signal.SIGKILL)  # every process it may signal\n"),
    # appended at the end of the notebook: it runs while the grader calls forward_backward
    "symlinks-in-the-results": (
        "# at the end\n"
        "_honest = forward_backward\n"
        "def forward_backward(model, x, y_true):\n"
        "    import os\n"
        "    out = os.path.join(os.environ['HOME'], '..', 'out')\n"
        "    for name, target in [('cells.pt', '{course}/hidden_tests/backprop/tests.py'),\n"
        "                         ('child.log', '/dev/zero'), ('progress.txt', '/dev/zero')]:\n"
        "        path = os.path.join(out if name != 'child.log' else out + '/..', name)\n"
        "        try:\n"
        "            os.remove(path)\n"
        "        except OSError:\n"
        "            pass\n"
        "        os.symlink(target, path)\n"
        "    return _honest(model, x, y_true)\n"),
    "fill-dev-shm": (
        "try:\n"
        "    with open('/dev/shm/autograder-cheat', 'wb') as f:\n"
        "        for _ in range(1024):\n"
        "            f.write(b'x' * 1024 ** 2)\n"
        "    print('CHEAT filled /dev/shm')\n"
        "except OSError as error:\n"
        "    print('CHEAT blocked', type(error).__name__)\n"),
}


# Not a cheat: what the sandbox must still allow (threads come from clone3, refused with
# ENOSYS so that the C library falls back to clone).
THREADS_AND_A_SUBPROCESS = (
    "import subprocess, threading, torch\n"
    "torch.set_num_threads(2)\n"
    "torch.ones(512, 512) @ torch.ones(512, 512)\n"
    "box = []\n"
    "worker = threading.Thread(target=lambda: box.append(1))\n"
    "worker.start(); worker.join()\n"
    "print('threads', 'ok' if box else 'failed')\n"
    "done = subprocess.run(['true'])\n"
    "print('subprocess', 'ok' if done.returncode == 0 else 'failed')\n"
    "torch.set_num_threads(1)\n")


def _cheating_notebook(release_notebook, solution, cheat: str) -> str:
    notebook = with_answers(release_notebook, {**solution, "train_step": NO_ZERO_GRAD})
    cell = nbformat.v4.new_code_cell(cheat)
    if cheat.startswith("# at the end"):
        notebook.cells.append(cell)
    else:
        notebook.cells.insert(1, cell)  # right after the intro
    return nbformat.writes(notebook)


def _sandbox_processes() -> list[str]:
    """Processes running as a sandbox uid, started from this checkout's Python."""
    listing = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True,
                             text=True).stdout
    return [line for line in listing.splitlines()
            if int(line.split()[0]) >= 100_000 and sys.executable in line]


@pytest.fixture(scope="module")
def batch(course, release_notebook, solution, tmp_path_factory):
    source = course.source_dir("backprop") / "backprop.ipynb"
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    submissions = {name: _cheating_notebook(release_notebook, solution,
                                            code.replace("{course}", str(course.root)))
                   for name, code in CHEATS.items()}
    submissions["honest"] = solution
    busy = with_answers(release_notebook, solution)
    busy.cells.insert(1, nbformat.v4.new_code_cell(THREADS_AND_A_SUBPROCESS))
    submissions["honest-with-threads"] = nbformat.writes(busy)
    submissions["honest-wrong"] = {**solution, "train_step": NO_ZERO_GRAD}
    results = grade_answers(course, release_notebook, tmp_path_factory.mktemp("cheats"),
                            submissions, timeout=TIMEOUT, workers=2)
    return results, before


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_cheat_scores_no_more_than_the_honest_wrong_answer(batch, cheat: str) -> None:
    results, _ = batch
    assert results["honest-wrong"].score == HONEST_WRONG
    assert results[cheat].score <= HONEST_WRONG, [t.name for t in results[cheat].tests
                                                  if t.passed]


def test_the_honest_solution_in_the_same_batch_scores_full_marks(batch) -> None:
    assert batch[0]["honest"].score == 10


def test_endless_cheats_are_stopped_at_the_timeout(batch) -> None:
    for cheat in ("fork-bomb", "infinite-loop", "sleep-forever"):
        assert batch[0][cheat].status == "timeout", cheat


def test_the_memory_bomb_fails_inside_its_own_process(batch) -> None:
    assert any("MemoryError" in error["error"] for error in batch[0]["memory-bomb"].cell_errors)


def test_threads_and_subprocesses_still_work_in_the_sandbox(batch) -> None:
    result = batch[0]["honest-with-threads"]
    assert "threads ok" in result.output and "subprocess ok" in result.output, result.output
    assert result.score == 10


def test_no_namespace_of_its_own(batch) -> None:
    assert "CHEAT unshare refused 1" in batch[0]["new-user-namespace"].output  # EPERM


def test_memory_is_one_budget_for_the_job_and_all_it_starts(batch) -> None:
    """Eight processes of 400 MiB, each under its own address-space limit, are 3.2 GiB
    together: without the cgroup all eight hold it; with it (1 GiB) the kernel kills most."""
    result = batch[0]["many-processes-memory-bomb"]
    if "CHEAT held" not in result.output:  # its own process was killed, or it thrashed
        assert result.status in ("crashed", "timeout"), (result.status, result.reason)
        return
    words = result.output.split("CHEAT held ")[1].split()
    held, killed = int(words[0]), int(words[2])
    assert killed >= 4 and held <= 4, result.output[:200]


def test_no_file_of_the_course_could_be_read_or_written(batch, course, solution) -> None:
    results, before = batch
    output = results["read-course-files"].output
    assert "CHEAT read" not in output and output.count("CHEAT blocked") == 5
    assert "CHEAT wrote" not in results["write-gradebook"].output
    assert not (course.root / "pwned.txt").exists()
    source = course.source_dir("backprop") / "backprop.ipynb"
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


def test_the_gradebook_holds_the_scores_the_grader_gave(batch, course) -> None:
    from autograder import commands

    table = commands.gradebook_table(course, "backprop")
    assert table.loc["write-gradebook", "total"] <= HONEST_WRONG
    assert table.loc["honest", "total"] == 10


def test_no_network_not_even_loopback(batch) -> None:
    output = batch[0]["sockets"].output
    assert "CHEAT connected" not in output and output.count("CHEAT blocked") == 2


def test_dev_shm_is_private_and_small(batch) -> None:
    assert "CHEAT blocked OSError" in batch[0]["fill-dev-shm"].output
    assert not Path("/dev/shm/autograder-cheat").exists()


def test_fake_results_and_exit_are_a_crash(batch) -> None:
    result = batch[0]["fake-results-then-exit"]
    assert result.status == "crashed" and result.score <= HONEST_WRONG
    assert "All tests passed" not in result.reason


def test_nothing_the_cheats_started_is_still_running(batch) -> None:
    assert _sandbox_processes() == []


def test_the_sandbox_had_every_layer_on(batch) -> None:
    assert all(result.sandbox_off == [] for result in batch[0].values())


def test_the_walk_found_no_test(batch) -> None:
    assert "CHEAT found tests: 0 in" in batch[0]["walk-frames-and-gc"].output
    assert os.environ.get("AUTOGRADER_NEVER_SET") is None


def test_a_job_sees_and_signals_only_its_own_processes(batch) -> None:
    output = batch[0]["see-and-signal-others"].output
    seen = int(output.split("CHEAT sees ")[1].split()[0])
    assert seen == 1  # itself: hidepid hides the warm worker, PID 1 of the namespace
    assert batch[0]["honest"].score == 10  # its kill(-1) reached nobody else


def test_doctor_reports_every_layer_on(tmp_path) -> None:
    done = subprocess.run([*AUTOGRADER, "doctor"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(sandbox.LAYERS)
    assert all(line.split(maxsplit=1)[1].startswith("on") for line in lines)


def test_a_layer_that_is_off_is_reported_not_hidden(course, release_notebook, solution,
                                                    tmp_path, monkeypatch) -> None:
    import io

    from autograder import commands

    monkeypatch.setattr(WarmSlot, "layers_off", property(lambda self: ["landlock: off (x)"]))
    folder = tmp_path / "incoming" / "weak-sandbox" / "backprop"
    folder.mkdir(parents=True)
    nbformat.write(with_answers(release_notebook, solution), folder / "backprop.ipynb")
    out = io.StringIO()
    results = commands.grade(course, "backprop", tmp_path / "incoming", out=out)
    assert results[0].sandbox_off == ["landlock: off (x)"]
    assert "WARNING: student code ran with these sandbox layers off" in out.getvalue()


def test_symlinks_planted_in_the_results_are_refused_not_followed(batch) -> None:
    result = batch[0]["symlinks-in-the-results"]
    assert result.score <= HONEST_WRONG
    assert "@hidden_test(" not in result.to_json() and "reference_mlp" not in result.to_json()


def test_a_daemon_left_by_a_job_dies_when_the_job_ends(course, release_notebook, solution,
                                                       tmp_path) -> None:
    """The warm slot and its PID namespace outlive each job; what a job left running must
    not (here a setsid daemon, while the notebook itself finishes normally)."""
    path = tmp_path / "backprop.ipynb"
    path.write_text(_cheating_notebook(release_notebook, solution, CHEATS["setsid-escape"]))
    assignment = Assignment.load(course, "backprop")
    slot = WarmSlot()
    try:
        result = grade_submission(assignment, Submission("daemon", path), 60, slot)
        assert result.status == GRADED and result.score == HONEST_WRONG
        assert slot.running
        assert _sandbox_processes() == []
    finally:
        slot.close()
