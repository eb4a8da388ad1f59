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
