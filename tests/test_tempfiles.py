"""The grader's temporary folders: a clean-up that a job's disk bomb cannot make fail, and a sweep
that removes what a killed run left but never what a live one uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder.tempfiles import make_temp_dir, owner_pid, remove_tree, sweep_stale

NOBODY = 65534


def _chain(top: Path, depth: int) -> None:
    """A chain of folders `depth` deep, made through folder handles (its paths are far longer
    than the kernel's PATH_MAX)."""
    folder = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    read_only = []
    for level in range(depth):
        os.mkdir("d", dir_fd=folder)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=folder))
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
        if level % 500 == 499:
            read_only.append(os.dup(deeper))
        os.close(folder)
        folder = deeper
    os.close(folder)
    for folder in read_only:  # deep down, made read-only once full
        os.fchmod(folder, 0o500)
        os.close(folder)


def _files(folder: Path, count: int) -> None:
    folder.mkdir()
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(count):
        os.close(os.open(str(i), os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=handle))
    os.close(handle)


def _bomb(top: Path, outside: Path) -> None:
    """What a job can leave in its folder: depth, file count, folders it made read-only or
    unreadable, files of other uids, symlinks out of the folder."""
    _chain(top, 3000)
    _files(top / "many", 100_000)
    (top / "many").chmod(0o500)
    locked = top / "locked"
    locked.mkdir()
    (locked / "secret").write_text("x")
    os.chown(locked / "secret", 12345, 12345)
    (locked / "secret").chmod(0)
    os.chown(locked, 12345, 12345)
    locked.chmod(0)
    (top / "escape").symlink_to(outside)
    (top / "escape-file").symlink_to(outside / "keep.txt")


def test_a_disk_bomb_job_folder_is_removed_completely(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the job's")
    top = make_temp_dir("test")
    try:
        _bomb(top, outside)
        assert remove_tree(top) == []
        assert not top.exists()
        # Through the symlinks nothing was followed.
        assert (outside / "keep.txt").read_text() == "not the job's"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_old_clean_up_fails_on_the_same_chain(tmp_path: Path) -> None:
    """Why remove_tree exists: the standard library's removal recurses, and a chain deeper
    than Python's recursion limit makes it raise (ignore_errors or not) and leave it all."""
    (tmp_path / "job").mkdir()
    _chain(tmp_path / "job", sys.getrecursionlimit() + 200)
    with pytest.raises(RecursionError):
        shutil.rmtree(tmp_path / "job", ignore_errors=True)
    assert remove_tree(tmp_path / "job") == []


def test_without_root_read_only_and_unreadable_folders_are_removed() -> None:
    """As the unprivileged owner (the grader without root), folders the job made read-only
    (0o500) or closed (0o000) are opened back up and removed."""
    top = make_temp_dir("test")
    os.chown(top, NOBODY, NOBODY)
    script = f"""
import os, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from autograder.tempfiles import remove_tree
from tests.test_tempfiles import _chain
os.setgid({NOBODY}); os.setuid({NOBODY})  # after the imports: Python may live in /root
top = Path({str(top)!r})
job = top / "job"
job.mkdir()
_chain(job, 1500)
(job / "ro").mkdir(); (job / "ro" / "f").write_text("x"); (job / "ro").chmod(0o500)
(job / "closed").mkdir(); (job / "closed" / "g").write_text("x"); (job / "closed").chmod(0)
job.chmod(0o500)
problems = remove_tree(job)
print(problems, job.exists())
sys.exit(0 if problems == [] and not job.exists() else 1)
"""
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              cwd="/")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert remove_tree(top) == []


def test_what_cannot_be_removed_is_reported_not_raised(tmp_path: Path) -> None:
    assert remove_tree(tmp_path / "never-existed") == []
    (tmp_path / "file").write_text("x")
    assert remove_tree(tmp_path / "file") == [] and not (tmp_path / "file").exists()
    # A mount point inside the folder cannot be removed: said, not raised.
    top = tmp_path / "job"
    (top / "mounted").mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                              str(top / "mounted")], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount here")
    try:
        problems = remove_tree(top)
        assert problems and all(str(top) in problem for problem in problems), problems
    finally:
        subprocess.run(["umount", str(top / "mounted")], check=True)
    assert remove_tree(top) == [] and not top.exists()


def test_names_carry_their_owner_and_a_bad_kind_is_refused() -> None:
    folder = make_temp_dir("test")
    try:
        assert folder.name.startswith(f"autograder-test-{os.getpid()}.")
        assert owner_pid(folder) == os.getpid()
        assert owner_pid("autograder-p16517y0") is None  # the old names carried no owner
    finally:
        remove_tree(folder)
    with pytest.raises(ValueError, match="kind"):
        make_temp_dir("../x")


def test_the_sweep_takes_dead_owners_folders_and_keeps_live_ones(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    zombie = subprocess.Popen(["true"])  # ended, not yet waited for: gone all the same
    try:
        while not _is_zombie(zombie.pid):
            pass
        folders = {}
        for name, pid in (("dead", dead.pid), ("live", live.pid), ("zombie", zombie.pid),
                          ("mine", os.getpid())):
            folders[name] = tmp_path / f"autograder-job-{pid}-abc{name}"
            folders[name].mkdir()
            _chain(folders[name], 5)
        stranger = tmp_path / "autograder-p16517y0"  # no owner in the name: not ours to judge
        stranger.mkdir()
        assert sweep_stale(tmp_path) == []
        assert not folders["dead"].exists() and not folders["zombie"].exists()
        assert folders["live"].exists() and folders["mine"].exists() and stranger.exists()
    finally:
        live.kill()
        live.wait()
        zombie.wait()


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
