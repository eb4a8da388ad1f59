"""Where the service keeps its record: one `Database` per process, on a SQLite file (the
default, WAL mode, one worker) or PostgreSQL (by URL, any number of workers).

Its schema is made and upgraded only by the Alembic migrations shipped beside this module
(`upgrade()`, at every start: idempotent, and safe when two processes start at once).

SQLite: every `session()` is a write transaction from its first statement (BEGIN IMMEDIATE),
because a transaction that reads and then writes would otherwise fail with "database is
locked" when another wrote in between (busy_timeout cannot help a deferred transaction that
must upgrade its lock). Only `session(readonly=True)` begins deferred, so readers never wait.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import event, exc, make_url
from sqlalchemy.orm import Session, sessionmaker

from autograder.errors import UserError

if TYPE_CHECKING:
    from autograder.course import Course

BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 10
STATEMENT_SECONDS = 30.0
# A server that stops answering with the connection open (a dead route, a frozen host):
# keepalives notice an idle connection's peer gone in ~11 s (5 + 3 x 2), tcp_user_timeout
# one whose sent data stays unacknowledged for 10 s; without them a request waited for the
# kernel's retransmissions (15+ minutes) and Ctrl-C could not stop serve.
TCP_USER_TIMEOUT_MS = 10_000
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any number: taken by every process that upgrades a PostgreSQL database, so two services
# starting at once do not both create the tables.
_UPGRADE_LOCK = 0x6167_5F75_7067  # "ag_upg"

# SQLite's errors that say the file cannot be used now, not that the SQL is wrong.
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "disk is full",
                       "readonly database", "read-only")
# PostgreSQL: connection exceptions (08xxx), the server shutting down or starting (57P0x).
_POSTGRES_UNAVAILABLE = ("08", "57P01", "57P02", "57P03", "53300")


UPGRADE_LOCK = ".upgrade-lock"  # beside a SQLite file: one schema upgrade at a time


class DatabaseUnavailable(Exception):
    """The database cannot be reached now (server down, connection refused, file locked past
    the busy timeout): the HTTP layer answers 503 and nothing was written."""


class BadDatabaseUrl(UserError):
    """--database or c.Service.database_url is not a URL SQLAlchemy can use."""


class Database:
    """One engine, its sessions, and its migrations."""

    def __init__(self, url: str, statement_seconds: float = STATEMENT_SECONDS) -> None:
        """`statement_seconds`: PostgreSQL's statement_timeout (c.Service.statement_seconds)."""
        self.url = url
        try:
            parsed = make_url(url)
            self.is_sqlite = parsed.get_backend_name() == "sqlite"
            if self.is_sqlite:
                self.engine = sqlalchemy.create_engine(
                    url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
                _configure_sqlite(self.engine)
            else:
                connect_args = (_postgres_connect_args(statement_seconds)
                                if parsed.get_backend_name() == "postgresql" else {})
                # pre_ping: a server restarted since a connection was pooled costs a
                # reconnect, not an error on the next request. pool_timeout: a request
                # waiting for a connection gets a 503, not a wait as long as the client's.
                self.engine = sqlalchemy.create_engine(url, pool_pre_ping=True,
                                                       pool_timeout=POOL_TIMEOUT_S,
                                                       connect_args=connect_args)
        except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
            raise BadDatabaseUrl(f"not a database URL the service can use ({error}); e.g. "
                                 "sqlite:////path/service.db or "
                                 "postgresql+psycopg://user@host/dbname") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readonly = sessionmaker(self.engine.execution_options(sqlite_begin="DEFERRED")
                                      if self.is_sqlite else self.engine,
                                      expire_on_commit=False)

    @classmethod
    def for_course(cls, course: Course, url: str | None = None) -> Database:
        """`url`, else c.Service.database_url, else sqlite:///<course>/service/service.db.
        A SQLite file's folder is made (mode 700) when missing: `token issue` before the
        first `serve` must write the database `serve` will use."""
        from autograder.service.settings import service_settings

        settings = service_settings(course)
        chosen = url or settings.database_url
        if not chosen:
            # A folder of its own: as root, `serve` hands the SQLite file's folder to the
            # service user, which it refuses for the course's root.
            chosen = f"sqlite:///{default_sqlite_path(course)}"
        database = cls(chosen, settings.statement_seconds)
        if database.sqlite_path is not None:
            try:
                database.sqlite_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"{database.sqlite_path.parent}: cannot make the SQLite "
                                f"database's folder ({error.strerror})") from None
        return database

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file (None: PostgreSQL, or SQLite in memory)."""
        if not self.is_sqlite:
            return None
        database = make_url(self.url).database
        return Path(database).resolve() if database and database != ":memory:" else None

    def describe(self) -> str:
        """The URL without its password, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (nothing to do when it is there)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._upgrade_lock(), self._translated(), self.engine.begin() as connection:
            if not self.is_sqlite:  # SQLite: BEGIN IMMEDIATE already serialises upgrades
                connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _UPGRADE_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def _upgrade_lock(self) -> Iterator[None]:
        """SQLite: one upgrade at a time, waiting as long as it takes (processes started
        together: serve, a worker, `token`). BEGIN IMMEDIATE alone gives up after the busy
        timeout, which a slow machine's migration can outlast. PostgreSQL: an advisory lock."""
        path = self.sqlite_path
        if path is None:
            yield
            return
        import fcntl

        # O_NOFOLLOW: the folder may be the (less trusted) HTTP process's (serve as root)
        lock = os.open(f"{path}{UPGRADE_LOCK}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)

    @contextmanager
    def session(self, readonly: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises. A database
        that cannot be reached raises DatabaseUnavailable. `readonly`: the block only reads
        (SQLite: it then never waits for writers)."""
        with self._translated():
            with (self._readonly if readonly else self._sessions)() as session:
                try:
                    yield session
                    if not readonly:  # readonly: closing ends the transaction, and keeps
                        session.commit()  # what was read usable (rollback would expire it)
                except BaseException:
                    session.rollback()
                    raise

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except exc.DBAPIError as error:
            if unavailable(error):
                raise DatabaseUnavailable(f"the database ({self.describe()}) cannot be "
                                          f"reached: {_first_line(error.orig)}") from error
            raise
        except exc.TimeoutError as error:  # no pooled connection came free
            raise DatabaseUnavailable(f"the database ({self.describe()}) is overloaded: "
                                      f"{error}") from error


def _postgres_connect_args(statement_seconds: float) -> dict[str, Any]:
    """libpq's options against a server that stops answering; statement_timeout bounds a
    statement the server is slow to finish (a lock held, an overloaded server)."""
    return {"connect_timeout": CONNECT_TIMEOUT_S,
            "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
            "keepalives_count": 3, "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            "options": f"-c statement_timeout={max(1, round(statement_seconds * 1000))}"}


def default_sqlite_path(course: Course) -> Path:
    """Where the service's database is when nothing says otherwise."""
    return Path(course.root).resolve() / "service" / "service.db"


def unavailable(error: exc.DBAPIError) -> bool:
    """Is this error the database being out of reach (not a bug in a statement)?"""
    if error.connection_invalidated:
        return True
    original = error.orig
    if isinstance(original, sqlite3.OperationalError):
        text = str(original).lower()
        return any(part in text for part in _SQLITE_UNAVAILABLE)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if isinstance(original, psycopg.OperationalError):
        state = original.sqlstate
        return state is None or state.startswith(_POSTGRES_UNAVAILABLE)
    return isinstance(original, psycopg.InterfaceError)


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _configure_sqlite(engine: sqlalchemy.Engine) -> None:
    """WAL, a busy timeout, foreign keys; and transactions begun by us (pysqlite's own
    transaction handling begins late and deferred)."""

    @event.listens_for(engine, "connect")
    def _on_connect(connection: Any, record: Any) -> None:
        connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sqlalchemy.Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")
