"""The job's world, built for real in a forked process: a minimal root (pivot_root) with the
installation read-only, a private /tmp bounded in bytes and in files that vanishes with the
job, nothing of the host's /etc, /sys, /var or /run, and sockets of the UNIX family only."""

from __future__ import annotations

import json
import os
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from autograder.execute import sandbox, seccomp

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces")


def in_sandbox(scratch: Path | None, probe: Callable[[Path], dict]) -> dict:
    """Fork, build the job's sandbox as the warm server does, run `probe(job folder)` in it
    and return what it found (a JSON-able dict) and the sandbox report."""
    sandbox.preload()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read)
        try:
            if os.getuid() != 0:
                sandbox.enter_user_namespace()
            report = sandbox.enter_job_namespaces()
            folder = sandbox.confine(scratch, 30, report, sandbox.sandbox_uid(os.getpid(), 0))
            found = {"report": report, "folder": str(folder), **probe(folder)}
        except BaseException:
            found = {"error": traceback.format_exc()}
        os.write(write, json.dumps(found).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    found = json.loads(data)
    assert "error" not in found, found.get("error")
    return found


def _fill(folder: Path) -> dict:
    """Write until refused: one big file, then many small ones."""
    written = 0
    try:
        with open(folder / "big", "wb") as big:
            for _ in range(200):  # up to 200 MiB
                big.write(b"x" * (1 << 20))
                big.flush()
                written += 1 << 20
        big_error = "none"
    except OSError as error:
        big_error = error.strerror
    os.remove(folder / "big")
    files = 0
    try:
        for files in range(30_000):  # noqa: B007
            (folder / f"f{files}").touch()
        files_error = "none"
    except OSError as error:
        files_error = error.strerror
    return {"written": written, "big_error": big_error, "files": files,
            "files_error": files_error}


def _try(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as error:
        return error.strerror or type(error).__name__
    return "allowed"


def test_without_a_host_folder_the_jobs_folder_is_bounded_and_vanishes() -> None:
    marker = f"autograder-marker-{uuid.uuid4().hex}"

    def probe(folder: Path) -> dict:
        import pwd

        (folder / marker).write_text("x")
        return {"cwd": os.getcwd(), "user": pwd.getpwuid(os.getuid()).pw_name,
                "owner": os.stat(folder).st_uid, "uid": os.getuid(),
                "marker_seen": (Path("/tmp/home") / marker).exists(), **_fill(folder)}

    found = in_sandbox(None, probe)
    assert found["report"]["root"].startswith("on (pivot_root"), found["report"]
    assert found["report"]["private-tmp"].startswith("on"), found["report"]
    assert found["folder"] == str(sandbox.JOB_HOME) == found["cwd"]
    assert found["owner"] == found["uid"] and found["user"] == "student"
    assert found["marker_seen"]
    # 64 MiB of bytes and 10,000 files (inodes), whatever the host's disk holds.
    assert found["big_error"] == "No space left on device", found
    assert 60 << 20 <= found["written"] <= 64 << 20, found["written"]
    assert found["files_error"] == "No space left on device", found
    assert 9_000 <= found["files"] < 10_000, found["files"]
    assert not (Path("/tmp/home") / marker).exists()  # nothing of it reached the host
    assert not any(marker in path.name for path in Path("/tmp").iterdir())


def test_the_world_inside_is_minimal_and_the_installation_read_only(tmp_path: Path) -> None:
    scratch = tmp_path / "job"
    (scratch / "work").mkdir(parents=True)
    (scratch / "job.json").write_text("{}")
    secret = tmp_path / "beside-the-job.txt"
    secret.write_text("not the job's")
    package = Path(sandbox.__file__).resolve().parent.parent

    def probe(folder: Path) -> dict:
        site = next(p for p in sys.path if p.endswith("site-packages"))
        return {
            "etc": sorted(os.listdir("/etc")),
            "passwd": Path("/etc/passwd").read_text(),
            "host_paths": [p for p in ("/sys", "/var", "/run", "/etc/hostname", "/root/.bashrc",
                                       "/home", str(secret)) if os.path.lexists(p)],
            "write_pth": _try(lambda: Path(site, "zz-evil.pth").write_text("import os\n")),
            "read_only": [p for p in (site, str(package), sys.prefix, sys.base_prefix, "/usr")
                          if os.statvfs(p).f_flag & os.ST_RDONLY],
            "write_judge": _try(lambda: open(package / "verify" / "judge.py", "a")),
            "write_usr": _try(lambda: Path("/usr/evil").write_text("x")),
            "write_root": _try(lambda: Path("/evil").write_text("x")),
            "read_job": (folder / "job.json").read_text(),
            "write_job": _try(lambda: (folder / "work" / "out.txt").write_text("ok")),
            "dev_null": _try(lambda: Path("/dev/null").write_text("x")),
            "urandom": len(Path("/dev/urandom").open("rb").read(8)),
            "mountinfo": Path("/proc/self/mountinfo").read_text(),
        }

    found = in_sandbox(scratch, probe)
    assert found["report"]["root"].startswith("on"), found["report"]
    assert found["etc"] == ["group", "passwd"]
    assert "daemon" not in found["passwd"] and "student" in found["passwd"]
    assert found["host_paths"] == []
    # Refused by the mount (and, for the job's own uid, by the files' owner too).
    assert len(found["read_only"]) == 5, found["read_only"]
    for attempt in ("write_pth", "write_judge"):
        assert found[attempt] in ("Read-only file system", "Permission denied"), found[attempt]
    assert found["write_usr"] == found["write_root"] == "Read-only file system"
    assert found["read_job"] == "{}" and found["write_job"] == "allowed"
    assert (scratch / "work" / "out.txt").read_text() == "ok"  # the host folder, bound in
    assert found["dev_null"] == "allowed" and found["urandom"] == 8
    mounted = [line.split()[4] for line in found["mountinfo"].splitlines()]
    assert not any(m.startswith(("/sys", "/var", "/run", "/etc", "/home")) for m in mounted)


def test_sockets_are_unix_only_and_dataloader_workers_still_run() -> None:

    def probe(folder: Path) -> dict:
        import socket

        import torch
        from torch.utils.data import DataLoader, TensorDataset

        found = {name: _try(lambda family=family, kind=kind: socket.socket(family, kind).close())
                 for name, family, kind in (
                     ("inet", socket.AF_INET, socket.SOCK_STREAM),
                     ("inet6", socket.AF_INET6, socket.SOCK_DGRAM),
                     ("netlink", socket.AF_NETLINK, socket.SOCK_RAW),
                     ("packet", socket.AF_PACKET, socket.SOCK_RAW),
                     ("vsock", socket.AF_VSOCK, socket.SOCK_STREAM),
                     ("unix", socket.AF_UNIX, socket.SOCK_STREAM))}
        found["unix_pair"] = _try(lambda: [s.close() for s in socket.socketpair()])
        found["inet_pair"] = _try(lambda: socket.socketpair(socket.AF_INET))
        data = TensorDataset(torch.arange(64.0).reshape(32, 2))
        loader = DataLoader(data, batch_size=8, num_workers=2)
        found["dataloader"] = float(sum(batch[0].sum() for batch in loader))
        return found

    found = in_sandbox(None, probe)
    assert found["report"]["seccomp"].startswith("on") and "UNIX only" in \
        found["report"]["seccomp"]
    for family in ("inet", "inet6", "netlink", "packet", "vsock", "inet_pair"):
        assert found[family] == "Address family not supported by protocol", (family, found)
    assert found["unix"] == found["unix_pair"] == "allowed"
    assert found["dataloader"] == float(sum(range(64)))


def test_the_filter_is_compiled_once_to_bpf() -> None:
    program = seccomp.build()
    assert len(program) % 8 == 0 and 20 < len(program) // 8 < 200


def test_without_libseccomp_the_layer_says_off_and_why() -> None:
    import subprocess

    code = ("import sys; sys.modules['pyseccomp'] = None\n"
            "from autograder.execute import seccomp; print(seccomp.apply())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.startswith("off (libseccomp unavailable:"), done.stdout + done.stderr


def test_when_no_new_root_can_be_built_it_says_so_and_tmp_stays_private(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "SYS_PIVOT_ROOT", -1)  # as on a kernel without pivot_root
    marker = f"autograder-marker-{uuid.uuid4().hex}"

    def probe(folder: Path) -> dict:
        Path("/tmp", marker).write_text("x")
        return {"tmp": sorted(os.listdir("/tmp")), "etc_hostname": os.path.exists("/etc/hostname"),
                "installation": os.path.isdir(sys.prefix)}

    found = in_sandbox(None, probe)
    assert found["report"]["root"].startswith("off ("), found["report"]
    assert found["report"]["private-tmp"].startswith("on"), found["report"]
    assert marker in found["tmp"] and found["installation"]
    assert not Path("/tmp", marker).exists()
