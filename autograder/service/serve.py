"""`autograder serve`: the whole service on one machine, as two processes.

1. As whoever started it (root in production): upgrade the database, sync the roster's people,
   bind the listening socket (so a port below 1024 works), and start the embedded worker, a
   child process that keeps root because it alone runs student code (the sandbox needs root).
2. Then this process drops to `c.Service.user` (setgroups([]), setgid, setuid, no new
   privileges) and serves the HTTP API with uvicorn. The HTTP process never runs student code;
   if it is compromised it holds nobody's privileges and cannot signal the worker.

The worker reads its stdin, a pipe from this process: when this process ends, however it ends
(SIGTERM, a crash, kill -9), the pipe closes and the worker finishes the job in hand and stops.
The queue is in the database, so nothing is lost either way: a job in hand when the worker was
killed is claimed again after its lease. If the worker dies on its own, the service stops
(exit 1) rather than accept uploads nobody grades.

SQLite as root: the HTTP process must write the database, its -wal and -shm, and create them in
its folder, so the folder is handed to the service user; that is refused for a folder holding
anything but the database (the course's root holds nbgrader_config.py, which the root worker
executes: whoever may rename files there may replace it).

What the HTTP process can see (root only). After the drop it imports modules as requests need
them (uvicorn's protocols, email parsing, encodings, the database driver...), so it must be able
to read the whole Python installation for as long as it runs -- and Python often lives where
other users cannot (pyenv under /root, mode 700), as does the course (a folder in a private
home) now and then. Two ways were weighed: import everything the process may ever need before
the drop (fragile: one lazily imported module missed, found by one odd request in production,
is a 500), or give the HTTP process a view of the file system of its own. This does the second
(`plan_view`, `isolate`): just before the drop, the process enters a private mount namespace
where root's home, and every folder that stops the service user on the way to what it needs,
is covered by an empty read-only tmpfs, and exactly what it needs is bound back at the same
path: the Python installation and the import path (read-only, the sandbox's own list:
`sandbox._installation_paths`), the course (read-only) and the SQLite database's folder
(writable). The worker, started before, keeps the machine's view. So the service runs where
Python is private, and the HTTP process, if compromised, cannot even list root's home (defense
in depth on top of the drop). What cannot be made reachable that way -- the course or Python
folder itself unreadable by the service user -- is refused before anything starts, naming the
path. Where no mount namespace can be had (a container without CAP_SYS_ADMIN) and everything
needed is readable anyway, the service starts without one and says so.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from autograder.course import Course
from autograder.errors import UserError
from autograder.execute.sandbox import (
    CLONE_NEWNS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    _bind,
    _check,
    _installation_paths,
    _libc,
    _mount,
)
from autograder.service.database import UPGRADE_LOCK

log = logging.getLogger(__name__)

BACKLOG = 2048
STOP_SECONDS = 30.0  # how long the worker may take to finish the job in hand
SQLITE_FILES = ("", "-wal", "-shm", "-journal")  # handed to the service user
WORKER_LOCK = ".worker-lock"  # the SQLite worker's lock (worker.py): the worker's own
_PR_SET_NO_NEW_PRIVS = 38
DATABASE_VARIABLE = "AUTOGRADER_SERVICE_DATABASE"  # serve -> its embedded worker


class ServeError(UserError):
    """The service cannot start as configured."""


def serve(course: Course, database_url: str | None = None, host: str | None = None,
          port: int | None = None, worker: bool = True, unsafe: bool = False,
          out: TextIO = sys.stdout) -> int:
    """Run the service until SIGTERM or SIGINT; 0 when stopped so, 1 when the worker died."""
    from autograder.service.auth import sync_people
    from autograder.service.database import Database
    from autograder.service.settings import check_course_settings

    # Settings and every assignment's policy, before anything starts: a typo stops serve
    # with one line instead of failing every student's upload.
    settings = check_course_settings(course)
    host = host or settings.host
    port = settings.port if port is None else port
    db = Database.for_course(course, database_url)  # a SQLite file's folder is made
    url = db.url
    print(f"autograder serve: database {db.describe()}", file=out, flush=True)
    try:
        db.upgrade()
        with db.session() as session:
            sync_people(session, course, list(settings.instructors))
    finally:
        db.dispose()  # no connection opened as root goes on into the unprivileged process
    account = service_account(settings.user) if os.geteuid() == 0 else None
    view = None
    if account is not None:
        writable = [db.sqlite_path.parent] if db.sqlite_path is not None else []
        view = plan_view(account, [Path(p) for p in _installation_paths()],
                         course.root.resolve(), writable)
        for needed in (Path(sysconfig.get_paths()["stdlib"]), course.root / "release"):
            if not readable_in_view(needed, account, view):
                raise ServeError(
                    f"{needed} cannot be read by {account.pw_name} (c.Service.user), which "
                    "the HTTP process runs as: make it (and what it holds) readable by that "
                    "user, or set c.Service.user to a user who can read it")
    if account is not None and db.is_sqlite:
        hand_over_sqlite(db.sqlite_path, course, account)
    listener = bind(host, port)
    child = start_worker(course, url, unsafe) if worker else None
    try:
        if account is not None:
            isolate(view, account, out)
            drop_privileges(account)
        check_readable(course)
        return run_http(course, url, settings, listener, child, out)
    finally:
        stop_worker(child)


def service_account(name: str) -> pwd.struct_passwd:
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise ServeError(f"c.Service.user = {name!r}: no such user on this machine (the HTTP "
                         "process runs as that user when started as root)") from None
    if account.pw_uid == 0:
        raise ServeError(f"c.Service.user = {name!r} is root: the HTTP process must run "
                         "unprivileged")
    return account


def _allowed(folder: Path, account: pwd.struct_passwd, wanted: int) -> bool:
    """Whether `account` (no supplementary groups, as after the drop) has the `wanted` bits
    (0o4 read, 0o1 search) on `folder`, by its permission bits."""
    try:
        info = folder.stat()
    except OSError:
        return False
    shift = 6 if info.st_uid == account.pw_uid else 3 if info.st_gid == account.pw_gid else 0
    return (info.st_mode >> shift) & wanted == wanted


def readable_by(path: Path, account: pwd.struct_passwd, below: Path | None = None) -> bool:
    """Whether `account` may list `path` and pass through every folder above it; `below`:
    only from that folder down (what is above it is the HTTP process's own tmpfs)."""
    path = path.resolve()
    for folder in (*reversed(path.parents), path):
        if below is not None and folder in below.parents:
            continue
        if not _allowed(folder, account, 0o5 if folder == path else 0o1):
            return False
    return True


@dataclass(frozen=True)
class View:
    """The HTTP process's file system: `hidden` folders covered by an empty read-only
    tmpfs, and under them `binds` (path, writable) shown again at the same path."""

    hidden: tuple[Path, ...]
    binds: tuple[tuple[Path, bool], ...]


def plan_view(account: pwd.struct_passwd, python: list[Path], course_root: Path,
              writable: list[Path]) -> View:
    """Root's home, and the first folder stopping `account` on the way to each needed path,
    are hidden; the needed paths under them are bound back (read-only, but `writable`)."""
    needed = [*((p, False) for p in python), (course_root, False),
              *((p.resolve(), True) for p in writable)]
    hidden: set[Path] = set()
    home = Path(os.path.expanduser("~root")).resolve()
    if home != Path("/") and home.is_dir():
        hidden.add(home)
    for path, _ in needed:
        blocker = next((folder for folder in reversed(path.parents)
                        if not _allowed(folder, account, 0o1)), None)
        if blocker is not None and blocker != Path("/"):
            hidden.add(blocker)
    outermost = tuple(sorted(h for h in hidden if not any(o in h.parents for o in hidden)))
    # Outer first: a writable database folder inside the read-only course comes after it.
    binds = sorted({(p, w) for p, w in needed if any(h in p.parents for h in outermost)},
                   key=lambda bind: (len(bind[0].parts), bind))
    return View(outermost, tuple(binds))


def readable_in_view(path: Path, account: pwd.struct_passwd, view: View) -> bool:
    """Whether `account` may list `path` in the HTTP process's view."""
    path = path.resolve()
    bound = [p for p, _ in view.binds if p == path or p in path.parents]
    if bound:
        return readable_by(path, account, below=max(bound, key=lambda p: len(p.parts)))
    if any(h == path or h in path.parents for h in view.hidden):
        return False  # hidden and not bound back
    return readable_by(path, account)


def isolate(view: View, account: pwd.struct_passwd, out: TextIO) -> None:
    """As root, just before the drop: this process enters a mount namespace of its own and
    sees the file system as `view` says (the worker, started before, keeps the machine's)."""
    # A mount namespace is per thread: another thread (none should exist yet) would keep
    # the machine's view, then run as the service user with it.
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        raise RuntimeError(f"isolate() needs a single-threaded process ({len(threads)} threads)")
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare")
    except OSError as error:
        needed = [path for path, _ in view.binds if not readable_by(path, account)]
        if needed:
            raise ServeError(
                f"the HTTP process cannot be given a view of the file system of its own "
                f"({error.strerror}), and {account.pw_name} (c.Service.user) cannot read "
                f"{needed[0]} without one: make it readable by that user, or run serve "
                "where mount namespaces are allowed (CAP_SYS_ADMIN)") from None
        print(f"autograder serve: warning: no mount namespace for the HTTP process "
              f"({error.strerror}): it sees the machine's file system as its user may",
              file=out, flush=True)
        return
    handles: dict[Path, int] = {}
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing goes back to the machine's
        # Held open (in this namespace: a bind's source must be one of its mounts) before
        # the tmpfs hides them from their paths.
        for path, _ in view.binds:
            handles[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        for folder in view.hidden:
            _mount("tmpfs", str(folder), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "size=64k,nr_inodes=1000,mode=755")
        for path, writable in view.binds:
            _bind(handles[path], str(path), read_only=not writable)
        for folder in view.hidden:  # the mount points made, nothing else goes there
            _mount(None, str(folder), None,
                   MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as error:  # half made: never go on with it
        raise ServeError(f"the HTTP process's view of the file system could not be made: "
                         f"{error}") from None
    finally:
        for handle in handles.values():
            os.close(handle)
    # The working folder again, through the new view (relative paths keep their meaning
    # where they can); else "/".
    try:
        os.chdir(os.getcwd())
    except OSError:
        os.chdir("/")


def hand_over_sqlite(path: Path | None, course: Course, account: pwd.struct_passwd) -> None:
    """Make the SQLite database, its -wal/-shm and its folder the service user's."""
    if path is None:
        return
    folder = path.parent
    course_root = course.root.resolve()
    own = {path.name + suffix for suffix in SQLITE_FILES}
    others = sorted(name for name in os.listdir(folder)
                    if name not in own
                    and name not in (path.name + WORKER_LOCK, path.name + UPGRADE_LOCK))
    if folder == course_root or folder in course_root.parents or others:
        raise ServeError(
            f"{path}: started as root, the service hands the SQLite database's folder to "
            f"{account.pw_name} (it creates the -wal and -shm files there), and {folder} holds "
            f"other files ({', '.join(others[:3]) or 'the course'}): put the database in a "
            "folder of its own, e.g. --database sqlite:///"
            f"{course_root / 'service' / 'service.db'} (or c.Service.database_url), or use "
            "PostgreSQL")
    for name in own:
        if (folder / name).exists():
            os.chown(folder / name, account.pw_uid, account.pw_gid)
    os.chown(folder, account.pw_uid, account.pw_gid)
    os.chmod(folder, 0o700)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound while still privileged."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    listener.listen(BACKLOG)
    listener.set_inheritable(False)  # the worker must not hold the port
    return listener


def drop_privileges(account: pwd.struct_passwd) -> None:
    """Become `account` for good: no supplementary groups, its group, its user, and no way
    back (setuid binaries cannot raise privileges either)."""
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.environ["HOME"] = account.pw_dir
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError("privileges could not be dropped")  # pragma: no cover


def check_readable(course: Course) -> None:
    """The HTTP process imports Python's modules as it needs them and reads the course's
    configuration and releases: say so clearly if the service user cannot (rather than fail
    requests later)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    try:
        os.listdir(stdlib)
    except OSError as error:
        raise ServeError(f"the service's user ({_user_name()}) cannot read "
                         f"Python's standard library ({stdlib}: {error.strerror}): install "
                         "Python where every user may read it") from None
    try:
        Course.load(course.root)
        os.listdir(course.root / "release")
    except (OSError, UserError) as error:
        raise ServeError(f"{course.root}: the service's user ({_user_name()}) "
                         f"cannot read the course: {error}") from None


def start_worker(course: Course, url: str, unsafe: bool) -> subprocess.Popen:
    """The embedded worker: a child that keeps our privileges and stops when its stdin
    closes (when this process ends, however it ends)."""
    command = [sys.executable, "-m", "autograder.service.serve", "--embedded-worker",
               str(course.root)]
    if unsafe:
        command.append("--unsafe")
    # The URL may hold a password: in the environment (readable by root only), not in argv
    # (which `ps` shows everyone).
    environment = {**os.environ, DATABASE_VARIABLE: url}
    # Its own process group: a Ctrl-C at the terminal reaches this process, which then stops
    # the worker in order (finish the job in hand), rather than both at once.
    return subprocess.Popen(command, stdin=subprocess.PIPE, close_fds=True, env=environment,
                            start_new_session=True)


def stop_worker(child: subprocess.Popen | None) -> None:
    if child is None or child.poll() is not None:
        return
    try:
        child.stdin.close()  # the worker's signal to stop
    except OSError:
        pass
    try:
        child.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("the embedded worker did not stop within %.0f s: its jobs go back to "
                    "the queue after their lease", STOP_SECONDS)
        try:
            child.kill()
        except PermissionError:  # root's process, and we are not root any more
            pass


def run_http(course: Course, url: str, settings: object, listener: socket.socket,
             child: subprocess.Popen | None, out: TextIO) -> int:
    """uvicorn on the bound socket until SIGTERM/SIGINT, or until the worker dies."""
    import uvicorn

    from autograder.service.app import create_app
    from autograder.service.auth import parse_proxies
    from autograder.service.database import Database
    from autograder.service.http_limits import limited_protocol

    db = Database(url, settings.statement_seconds)
    app = create_app(course, db, settings)
    if child is not None:  # the worker ranks "best" for gradebook.db: so must this process
        from autograder.service.course_sync import ranking_problems

        for problem in ranking_problems(course):
            log.error("the late-penalty plugin cannot be made in the HTTP process (as %s), "
                      "so its lists may count another submission than gradebook.db does: "
                      "%s", _user_name(), problem)
    config = uvicorn.Config(
        app, proxy_headers=False,  # the app decides on X-Forwarded-For (trusted_proxies)
        access_log=False,  # paths hold submission ids; errors are logged by the app
        server_header=False, date_header=True,
        # Deadlines for a request's headers and body and a cap per client address: without
        # them a few thousand half-sent requests from one machine took every connection.
        http=limited_protocol(settings.header_seconds, settings.body_seconds,
                              settings.connections_per_address,
                              exempt=parse_proxies(list(settings.trusted_proxies))),
        ws="none",  # no WebSocket route; an upgrade would leave our protocol's accounting
        limit_concurrency=settings.max_connections,  # 503 beyond: a bound on memory
        backlog=BACKLOG, timeout_keep_alive=5, timeout_graceful_shutdown=10,
        log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    worker_died: list[int] = []
    if child is not None:
        def watch() -> None:
            code = child.wait()
            if not server.should_exit:
                worker_died.append(code)
                log.error("the embedded worker ended (exit %s): stopping the service", code)
                server.should_exit = True

        threading.Thread(target=watch, daemon=True, name="worker-watch").start()
    address, port = listener.getsockname()[:2]
    print(f"autograder serve: http://{address}:{port} (HTTP as "
          f"{_user_name()}, pid {os.getpid()}; "
          + (f"worker pid {child.pid}" if child else "no embedded worker")
          + f"; database {_redacted(url)})", file=out, flush=True)
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the handler
    # it found: let that be one that records it, so that this process goes on to stop the
    # worker in order and exits 0 (not killed by its own signal halfway).
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)
    try:
        server.run(sockets=[listener])
    finally:
        db.dispose()
    return 1 if worker_died else 0


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no entry in /etc/passwd (containers)
        return f"uid {os.getuid()}"


def _redacted(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- `serve --demo`: the service on the shipped examples -----------------------------------

def prepare_demo(course: Course, into: Path | None, out: TextIO) -> tuple[Course, str]:
    """A scratch copy of the course (as `autograder demo` makes), released, the shipped
    examples' students in its roster, and a token each (printed, and in tokens.csv); the
    scratch course and its database URL (SQLite, in a folder of its own)."""
    import csv

    from autograder.demo import DEMO_ASSIGNMENT, scratch_course
    from autograder.roster import import_roster
    from autograder.service.auth import issue_roster_tokens, sync_people
    from autograder.service.database import Database
    from autograder.service.settings import Service

    examples = course.root / "examples" / "submitted"
    students = sorted(path.name for path in examples.iterdir() if path.is_dir())
    demo = scratch_course(course, into)
    os.chmod(demo.root, 0o755)  # the service's user reads the course
    # In a child process: checking the release loads the hidden tests, and torch starts a
    # thread of its own, while the HTTP process must be single-threaded when it enters its
    # mount namespace (`isolate`).
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "--course", str(demo.root),
                           "release", DEMO_ASSIGNMENT], capture_output=True, text=True)
    if done.returncode != 0:
        raise ServeError(f"releasing {DEMO_ASSIGNMENT} in {demo.root} failed: "
                         f"{done.stderr.strip()[-2000:]}")
    roster = demo.root / "roster.csv"
    with roster.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "first_name", "last_name", "email"])
        writer.writerows([sid, "Example", sid, f"{sid}@example.edu"] for sid in students)
    import_roster(demo, roster)
    (demo.root / "service").mkdir(mode=0o700)
    url = f"sqlite:///{demo.root / 'service' / 'service.db'}"
    db = Database(url)
    try:
        db.upgrade()
        with db.session() as session:
            sync_people(session, demo, list(Service(config=demo.config).instructors))
            issued = issue_roster_tokens(session, demo)
    finally:
        db.dispose()
    tokens = demo.root / "tokens.csv"
    with os.fdopen(os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
                   newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "email", "token"])
        writer.writerows(issued)
    print(f"== demo course: {demo.root} (a scratch copy; tokens of its {len(issued)} example "
          f"students in {tokens}):", file=out)
    for sid, _name, _email, token in issued:
        print(f"   {sid:<22} {token}", file=out)
    shown = next((row for row in issued if row[0] == "solution"), issued[0])
    print("== a student submits, from another terminal:\n"
          f"   AUTOGRADER_TOKEN={shown[3]} autograder submit "
          f"{examples / shown[0] / DEMO_ASSIGNMENT / (DEMO_ASSIGNMENT + '.ipynb')} "
          "--server http://HOST:PORT  (the address below)", file=out, flush=True)
    return demo, url


# --- the embedded worker's process ---------------------------------------------------------

def run_embedded_worker(course_root: Path, url: str, unsafe: bool = False) -> int:
    """Grade queued jobs until stdin closes or SIGTERM/SIGINT; results are synced to the
    course's files (gradebook.db, autograded/, feedback/) as they are committed. Another
    worker on the same SQLite file: WorkerAlreadyRunning (the service stops, saying so)."""
    from autograder.grader import Grader
    from autograder.service.database import Database
    from autograder.service.settings import Service
    from autograder.service.worker import ServiceWorker, course_sync_batch

    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())

    def parent_gone() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        stop.set()

    threading.Thread(target=parent_gone, daemon=True, name="parent-watch").start()
    course = Course.load(course_root)
    settings = Service(config=course.config)
    db = Database(url, settings.statement_seconds)
    with Grader(course, unsafe=unsafe) as grader, \
            ServiceWorker(db, grader, lease_seconds=settings.lease_seconds,
                          poll_seconds=settings.poll_seconds,
                          on_results=course_sync_batch(course, db, grader),
                          repoint_stale=True) as worker:
        grader.launch()
        threading.Thread(target=_keep_course_files, args=(course, db, settings, stop),
                         daemon=True, name="course-files").start()
        while not stop.is_set():
            try:
                worker.run(stop)  # rides out the database's absences itself
            except Exception:  # a bug: keep grading rather than leave the queue unserved
                log.exception("the embedded worker failed; starting again in 1 s")
                stop.wait(1.0)
    db.dispose()
    return 0


def _keep_course_files(course: Course, db: Any, settings: Any, stop: threading.Event) -> None:
    """Results this worker did not record itself (workers on other machines, a confirmed
    regrade, a sync that found the course busy) reach the course's files too: every
    `c.Service.course_sync_seconds`, each assignment's counted submissions are synced (an
    unchanged student costs a file comparison)."""
    from autograder.results import one_line
    from autograder.service.course_sync import sync_all, synced_assignments

    while not stop.wait(settings.course_sync_seconds):
        try:
            assignments = synced_assignments(db)
        except Exception as error:  # the database away: the next round
            log.warning("course files not brought up to date this round (%s)",
                        type(error).__name__)
            continue
        for assignment in assignments:  # one assignment's trouble is not the others'
            try:
                report = sync_all(course, db, assignment, wait=5.0)
            except Exception as error:  # a busy course, a broken plugin: the next round
                log.warning("course files of %s not brought up to date this round (%s: %s)",
                            one_line(assignment, 100), type(error).__name__,
                            one_line(str(error), 300))
                continue
            if report.failed:
                log.warning("course files of %s not brought up to date: %s",
                            one_line(assignment, 100), "; ".join(report.failed)[:500])


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING,
                        format="autograder worker: %(levelname)s: %(message)s")
    url = os.environ.pop(DATABASE_VARIABLE, "")
    if len(argv) < 2 or argv[0] != "--embedded-worker" or not url:
        print("usage: python -m autograder.service.serve --embedded-worker COURSE [--unsafe], "
              f"with ${DATABASE_VARIABLE} (started by `autograder serve`)", file=sys.stderr)
        return 2
    try:
        return run_embedded_worker(Path(argv[1]), url, unsafe="--unsafe" in argv[2:])
    except UserError as error:  # another worker on the SQLite file; no root without --unsafe
        print(f"autograder worker: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
