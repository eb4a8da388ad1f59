"""Real databases for the service's tests: a SQLite file, and PostgreSQL.

PostgreSQL is the machine's server on 127.0.0.1:5432 where one runs (trust auth), else a
throwaway server started here from the machine's PostgreSQL binaries (initdb + pg_ctl, as an
unprivileged user when run as root). Each test gets a database of its own, named after this
test run, created here and dropped at the end; the run fails (never skips) when neither server
can be had. `ThrowawayPostgres` is also what the fault tests stop and start: never the
machine's own server.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import pwd
import shlex
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
MACHINE_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
RUN_PREFIX = f"agtest_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _connectable(host: str, port: int, user: str) -> bool:
    try:
        with psycopg.connect(host=host, port=port, user=user, dbname="postgres",
                             connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        found = [shutil.which("initdb") or ""]
    if not found[-1]:
        raise RuntimeError("PostgreSQL is not running on 127.0.0.1:5432 and no initdb was found "
                           "to start a throwaway server (install postgresql)")
    return Path(found[-1]).parent


class ThrowawayPostgres:
    """A PostgreSQL server of the test's own, in a temporary folder, on a free port."""

    def __init__(self, data_parent: Path | None = None) -> None:
        self.bin = _binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="agpg-", dir=data_parent))
        self.data = self.folder / "data"
        self.port = free_port()
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            account = "postgres" if _has_user("postgres") else "nobody"
            self._as = ["runuser", "-u", account, "--"]
            owner = pwd.getpwnam(account)
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        os.chmod(self.folder, 0o700)

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=60)

    def start(self) -> ThrowawayPostgres:
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user,
                      "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30",
                  "-l", str(self.folder / "log"),
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode,
                        "-w", "stop"], capture_output=True, timeout=60)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{db}"


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class PostgresForTests:
    """Where the test run's databases are made: the machine's server, else a throwaway one."""

    def __init__(self) -> None:
        self.throwaway: ThrowawayPostgres | None = None
        if _connectable("127.0.0.1", 5432, "postgres"):
            self.host, self.port = "127.0.0.1", 5432
        else:
            self.throwaway = ThrowawayPostgres().start()
            self.host, self.port = "127.0.0.1", self.throwaway.port
        self.made: list[str] = []

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user="postgres",
                               dbname="postgres", autocommit=True)

    def create(self) -> str:
        """A new, empty database of this test run; its SQLAlchemy URL."""
        name = f"{RUN_PREFIX}_{len(self.made)}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{name}"

    def drop_all(self) -> None:
        with self._admin() as admin:
            for name in self.made:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()
        if self.throwaway is not None:
            self.throwaway.remove()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02):  # noqa: ANN001, ANN201
    """Poll until `predicate()` is truthy (its value), or AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        time.sleep(interval)


class CuttableProxy:
    """A TCP proxy the test runs between the service and its PostgreSQL, to cut the database
    off and bring it back: `cut()` resets every connection and refuses new ones (a reset
    at once, as a dead route or a restarted server gives); `restore()` lets them through
    again. The service sees its database vanish without anyone touching the server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def url(self, db: str, user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{db}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                refused = self._cut
            if refused:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True,
                                 name="proxy-pump").start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._drop(end)

    def _drop(self, end: socket.socket) -> None:
        with self._lock:
            self._open.discard(end)
        _reset(end)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            ends, self._open = list(self._open), set()
        for end in ends:
            _reset(end)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._open) // 2

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


def _reset(end: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), not FIN: the other side sees the connection die."""
    try:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        end.close()
    except OSError:
        pass


@contextlib.contextmanager
def tmpfs(size: str = "2m", mode: int = 0o755):  # -> Iterator[Path]
    """A tiny tmpfs of its own (root only: the test fails, never skips, without root), so a
    test can fill the service's disk without filling the machine's."""
    if os.geteuid() != 0:
        raise RuntimeError("mounting a tmpfs needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="agtmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode:o}", "tmpfs",
                    str(mountpoint)], check=True, capture_output=True, timeout=30)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)
        shutil.rmtree(mountpoint, ignore_errors=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding `folder` until at most `leave` bytes are free (0: full);
    the file written, to delete when space should come back."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        while (free := shutil.disk_usage(folder).free) > leave:
            try:
                handle.write(b"\0" * min(65536, free - leave))
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
    return filler


# --- A real `autograder serve` for the service's tests and the bench ----------------------------

def open_course(prefix: str, students: list[str]):  # noqa: ANN201 -> Iterator[Course]
    """A released course with `students` rostered, in a new folder the service's user
    (nobody) may read; removed afterwards. For module fixtures of the serve tests."""
    from conftest import make_course

    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    course = make_course(root)
    add_students(root, students)
    yield course
    shutil.rmtree(root, ignore_errors=True)


def add_students(course_root: Path, ids: list[str]) -> None:
    """Put `ids` in the course's roster (nbgrader's student CSV through `autograder roster
    import`), as an instructor would."""
    from autograder.course import Course
    from autograder.roster import import_roster

    roster = Path(tempfile.mkdtemp(prefix="agroster-")) / "students.csv"
    roster.write_text("id,first_name,last_name,email\n"
                      + "".join(f"{sid},Student,{sid},{sid}@example.edu\n" for sid in ids),
                      encoding="utf-8")
    import_roster(Course.load(course_root), roster)
    shutil.rmtree(roster.parent)


def student_tokens(course_root: Path, url: str) -> dict[str, str]:
    """Every rostered student's token, issued in the service's database (upgraded first)."""
    from autograder.course import Course
    from autograder.service.auth import issue_roster_tokens, sync_people
    from autograder.service.database import Database

    course = Course.load(course_root)
    db = Database.for_course(course, url)
    try:
        db.upgrade()
        with db.session() as session:
            sync_people(session, course, [])
            rows = issue_roster_tokens(session, course)
    finally:
        db.dispose()
    return {sid: token for sid, _name, _email, token in rows}


def as_user(command: list[str], uid: int) -> list[str]:
    """`command` (a Python program) run by root as `uid` (no groups). On this test machine
    Python lives under /root (mode 700), where an ordinary user cannot even start it, and a
    fresh clone may sit in a private folder (mktemp's): as tests/test_non_root.py does, run it
    in a mount namespace where each such folder shows only what is needed (Python's folder,
    the checkout). (Only for a service *started* unprivileged: started as root, `serve` gives
    its HTTP process such a view itself, with no help from the test.)"""
    import sys

    command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]
    shown = {}  # a closed folder -> the child of it on the way to what is needed
    for needed in (Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
                   Path(__file__).resolve().parent.parent):
        for folder in reversed(needed.parents):  # from / down
            if folder == needed or not (folder.stat().st_mode & 0o001):
                if folder != needed:
                    child = needed.relative_to(folder).parts[0]
                    shown.setdefault(folder, set()).add(child)
                break
    if not shown:
        return command
    script = "set -e\n"
    for number, (folder, children) in enumerate(sorted(shown.items())):
        holds = []
        for child in sorted(children):
            hold = shlex.quote(tempfile.mkdtemp(prefix=f"agshow{number}-"))
            script += f"mount --bind {shlex.quote(str(folder / child))} {hold}\n"
            holds.append((child, hold))
        script += f"mount -t tmpfs -o mode=755,size=1m tmpfs {shlex.quote(str(folder))}\n"
        for child, hold in holds:
            target = shlex.quote(str(folder / child))
            script += f"mkdir -p {target}\nmount --move {hold} {target}\nrmdir {hold}\n"
    script += f"exec {shlex.join(command)}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


class ServeProcess:
    """`autograder serve` as a real process on a free port; its output in a file
    (`database_url` None: serve's default database)."""

    def __init__(self, course_root: Path, database_url: str | None, *args: str,
                 port: int | None = None, env: dict[str, str] | None = None,
                 as_uid: int | None = None, log_dir: Path | None = None) -> None:
        import sys

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="agserve-"))) / "serve.log"
        # As root: exactly the documented command, no help (serve makes Python reachable
        # for its HTTP process itself); as `as_uid`: started by that ordinary user.
        # database_url None: no --database (c.Service.database_url, else the default file)
        self.command = [sys.executable, "-m", "autograder.cli", "--course", str(course_root),
                        "serve", *(["--database", database_url] if database_url else []),
                        "--port", str(self.port), *args]
        if as_uid is not None:
            self.command = as_user(self.command, as_uid)
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ServeProcess:
        import httpx

        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env, cwd=REPO)
        log.close()

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"serve ended ({self.process.returncode}):\n{self.log}")
            try:
                return httpx.get(f"{self.url}/schema/openapi.json", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, 0.1)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pid(self) -> int:
        """The embedded worker's pid (the serve process's child running the worker)."""
        def found() -> int | None:
            for child in _children(self.pid):
                try:
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"--embedded-worker" in command:
                    return child
            return None

        return wait_for(found, 30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, and the exit code (the worker must be gone too)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(15)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve did not stop within {timeout} s:\n{self.log}") from None

    def kill(self) -> None:
        """kill -9 the serve process and its worker (a power cut, as near as a test gets)."""
        if self.process is None or self.process.poll() is not None:
            return
        pids = [self.pid, *_children(self.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        self.process.wait()
        for pid in pids[1:]:
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists()
                     or _state(pid) == "Z", 30)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                kids = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
                found += [int(kid) for kid in kids]
                todo += [int(kid) for kid in kids]
        except OSError:
            pass
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def uid_of(pid: int) -> int:
    """The real uid of a process (/proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")
