"""Without root: the grader refuses to start when a layer that protects it is off (here the
memory budget: v1 cgroups need root), unless told `--unsafe`; then it grades, and a job can
write neither into the installation -- though it lives under /tmp and belongs to the grader's
user, as a checkout in a temporary folder would -- nor into the course, nor reach the network
or the host's /etc.

Run for real: the CLI under an unprivileged uid, with its own virtualenv and copy of this
package owned by that uid (Python itself stays where it is, in /root/.pyenv: /root is
private, so a mount namespace covers /root and binds only .pyenv back)."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from autograder.author import with_answers
from autograder.store import load_results
from tests.conftest import REPO, make_course, train_step_calling, write_submissions

UID = 64_321  # no user of this machine: the grader's uid for these tests
NO_ZERO_GRAD = train_step_calling("loss.backward()", "optimizer.step()")  # 6 of 10 points
ATTACKS = ("pth", "judge", "course", "gradebook", "tcp", "host-passwd")
ATTACK = """import os, socket, site
def attempt(name, action):
    try:
        action()
        print('ATTACK', name, 'succeeded')
    except Exception as error:
        print('ATTACK', name, 'blocked', type(error).__name__)
site_packages = [p for p in site.getsitepackages() if p.endswith('site-packages')][0]
attempt('pth', lambda: open(os.path.join(site_packages, 'zz-evil.pth'), 'w').write(
    'import os; open("/tmp/pwned-by-pth", "w")\\n'))
import autograder.verify.judge as judge
attempt('judge', lambda: open(judge.__file__, 'a').write('\\n# changed by a student\\n'))
attempt('course', lambda: open('{course}/pwned.txt', 'w').write('x'))
attempt('gradebook', lambda: open('{course}/gradebook.db', 'ab').write(b'x'))
attempt('tcp', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2))
def host_passwd():
    if 'daemon:' not in open('/etc/passwd').read():
        raise PermissionError('not the host file')
attempt('host-passwd', host_passwd)
"""

needs_tools = pytest.mark.skipif(
    os.getuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
    reason="needs root (to drop to another uid) and util-linux's unshare and setpriv")
pytestmark = needs_tools


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """A folder under /tmp owned by UID: its virtualenv (which reaches this one's packages
    through a .pth file), a copy of the autograder package, and a copy of the course."""
    base = Path(tempfile.mkdtemp(prefix="autograder-nonroot-", dir="/tmp"))
    base.chmod(0o755)
    try:
        subprocess.run([str(Path(sys.base_prefix, "bin", "python3")), "-m", "venv",
                        "--without-pip", str(base / "venv")], check=True)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site_packages = base / "venv" / "lib" / version / "site-packages"
        # This venv's packages, bound at base/hostvenv in the user's mount namespace: the
        # checkout holding them may be private to root (a fresh clone in a mktemp folder).
        packages = Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix)
        (base / "hostvenv").mkdir()
        (site_packages / "autograder-checkout.pth").write_text(
            f"{base / 'checkout'}\n{base / 'hostvenv' / packages}\n")
        shutil.copytree(REPO / "autograder", base / "checkout" / "autograder",
                        ignore=shutil.ignore_patterns("__pycache__"))
        (base / "course").mkdir()
        make_course(base / "course")
        for name in ("home", "tmp"):
            (base / name).mkdir()
        subprocess.run(["chown", "-R", f"{UID}:{UID}", str(base)], check=True)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def grade_as_user(base: Path, incoming: Path, *options: str) -> subprocess.CompletedProcess:
    """`autograder grade` as UID, in a mount namespace where /root shows only .pyenv."""
    python = base / "venv" / "bin" / "python"
    command = [str(python), "-m", "autograder.cli", "--course", str(base / "course"), "grade",
               "backprop", str(incoming), "--workers", "2", "--timeout", "60", *options]
    environment = [f"PATH={base / 'venv' / 'bin'}:/usr/bin:/bin", f"HOME={base / 'home'}",
                   f"TMPDIR={base / 'tmp'}", "LANG=C.UTF-8"]
    pyenv = Path(sys.base_prefix).resolve()
    while pyenv.parent != Path("/root") and pyenv != pyenv.parent:
        pyenv = pyenv.parent
    script = (f"set -e\nmount --bind -o ro {shlex.quote(sys.prefix)} "
              f"{shlex.quote(str(base / 'hostvenv'))}\n")
    if pyenv.parent == Path("/root"):  # Python under /root (mode 700): show it, nothing else
        hold = shlex.quote(str(base / "hold"))
        script += (f"mkdir -p {hold}\n"
                   f"mount --bind {shlex.quote(str(pyenv))} {hold}\n"
                   "mount -t tmpfs -o mode=755,size=1m tmpfs /root\n"
                   f"mkdir {shlex.quote(str(pyenv))}\n"
                   f"mount --move {hold} {shlex.quote(str(pyenv))}\n")
    script += shlex.join(["exec", "setpriv", f"--reuid={UID}", f"--regid={UID}",
                          "--clear-groups", "env", "-i", *environment, *command])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, cwd=base, timeout=600)


def _notebook(release_notebook, answers: dict[str, str], cell: str | None = None) -> str:
    notebook = with_answers(release_notebook, answers)
    if cell is not None:
        notebook.cells.insert(1, nbformat.v4.new_code_cell(cell))
    return nbformat.writes(notebook)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_without_root_grading_is_refused_unless_unsafe(world: Path, release_notebook,
                                                       solution) -> None:
    incoming = write_submissions(world / "incoming-refused",
                                 {"honest": _notebook(release_notebook, solution)})
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(incoming)], check=True)
    done = grade_as_user(world, incoming)
    assert done.returncode == 2, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("autograder: error: refusing to grade"), error
    assert "cgroup: off (not root)" in error[0] and "--unsafe" in error[0]
    assert load_results(world / "course", "backprop") == []  # nothing graded, nothing written
    assert not (world / "course" / "autograded").exists()


def test_without_root_and_unsafe_the_grader_and_course_stay_out_of_reach(
        world: Path, release_notebook, solution) -> None:
    judge = world / "checkout" / "autograder" / "verify" / "judge.py"
    site_packages = next((world / "venv" / "lib").glob("python*/site-packages"))
    before = _digest(judge)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    attack = ATTACK.replace("{course}", str(world / "course")).replace(
        "{port}", str(listener.getsockname()[1]))
    incoming = write_submissions(world / "incoming", {
        "attacker": _notebook(release_notebook, {**solution, "train_step": NO_ZERO_GRAD}, attack),
        "honest": _notebook(release_notebook, solution)})
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(incoming)], check=True)

    done = grade_as_user(world, incoming, "--unsafe")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "UNSAFE: " in done.stdout
    results = {r.student_id: r for r in load_results(world / "course", "backprop")}
    assert results["honest"].score == 10 and results["honest"].status == "graded"
    # Every layer that can be had without root is on.
    assert sorted(layer.split(":")[0] for layer in results["honest"].sandbox_off) == [
        "cgroup", "uid"], results["honest"].sandbox_off
    output = results["attacker"].output
    for name in ATTACKS:
        assert f"ATTACK {name} blocked" in output, (name, output)
    assert "succeeded" not in output
    assert results["attacker"].score <= 6
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert not (site_packages / "zz-evil.pth").exists()
    assert _digest(judge) == before
    assert not (world / "course" / "pwned.txt").exists()

    # The next batch runs on an untouched grader: the same scores.
    again = grade_as_user(world, incoming, "--unsafe", "--regrade")
    assert again.returncode == 0, again.stdout + again.stderr
    results = {r.student_id: r for r in load_results(world / "course", "backprop")}
    assert results["honest"].score == 10 and results["attacker"].score == 6
    assert not (world / "tmp" / "pwned-by-pth").exists() and not Path("/tmp/pwned-by-pth").exists()
