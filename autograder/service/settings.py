"""The service's settings: `c.Service.*` in nbgrader_config.py, each declared once with its help.
Per-assignment course policy (budgets, which submission counts, exam mode) is
`autograder.service.policy`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from traitlets import Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Config, Configurable

from autograder.config_check import check_class_names, check_settings
from autograder.errors import UserError

if TYPE_CHECKING:
    from autograder.course import Course

# What each checked setting must be (the error says it): a mistake here would otherwise show
# only when a student meets it (a 0 lease re-grades every job; a 0 window locks nobody out).
POSITIVE = ("lease_seconds", "poll_seconds", "session_hours", "sign_in_window_minutes",
            "header_seconds", "body_seconds", "course_sync_seconds", "statement_seconds")
AT_LEAST_ONE = ("max_upload_bytes", "sign_in_attempts", "connections_per_address",
                "max_connections")


class ServiceSettingsError(UserError):
    """A `c.Service` setting is unknown or not usable; the message names it."""


class Service(Configurable):
    """How `autograder serve` and `autograder worker` run."""

    database_url = Unicode(
        "", help="SQLAlchemy URL of the service's database, e.g. "
                 "postgresql+psycopg://grader@db/course. Empty: a SQLite file, "
                 "<course>/service/service.db (WAL mode; one worker).").tag(config=True)
    statement_seconds = Float(30.0, help=(
        "PostgreSQL: a statement not finished in this many seconds is cancelled by the server "
        "(statement_timeout), and the request answered 503, rather than wait as long as the "
        "server does. A server that stops answering altogether is noticed by TCP keepalives "
        "and a 10 s TCP user timeout.")).tag(config=True)
    host = Unicode("127.0.0.1", help="Address `serve` listens on.").tag(config=True)
    port = Int(8000, help="Port `serve` listens on.").tag(config=True)
    user = Unicode("nobody", help="The unprivileged user the HTTP process runs as when started "
                                  "as root (the embedded worker alone keeps root: it runs the "
                                  "sandbox).").tag(config=True)
    trusted_proxies = List(Unicode(), default_value=[], help=(
        "Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For is believed; "
        "from anyone else the connection's own address is the client's.")).tag(config=True)
    instructors = List(Unicode(), default_value=[], help=(
        "Ids of the people who may use the instructor's API (the roster's students are the "
        "students).")).tag(config=True)
    max_upload_bytes = Int(5 * 1024 * 1024, help="Largest notebook accepted, in bytes."
                           ).tag(config=True)
    header_seconds = Float(10.0, help=(
        "A connection whose request headers are not all in this many seconds after it was made "
        "(or after the previous answer on it) is closed: a client cannot hold a connection "
        "open by sending a request slowly.")).tag(config=True)
    body_seconds = Float(60.0, help=(
        "A connection whose request body is not all in this many seconds after its headers is "
        "closed (the largest notebook must arrive in this time over a student's slowest "
        "link).")).tag(config=True)
    connections_per_address = Int(64, help=(
        "Connections open at once from one client address (an IPv6 client: one /64); more are "
        "closed at once, so that one machine cannot take every connection. Students behind "
        "one NAT share an address: raise it for a class that is. Behind a reverse proxy every "
        "connection is the proxy's: the proxy must limit its clients itself (nginx: "
        "client_header_timeout, client_body_timeout, limit_conn).")).tag(config=True)
    max_connections = Int(2048, help=(
        "Connections open at once in all; beyond this every request is answered 503 (a bound "
        "on the HTTP process's memory).")).tag(config=True)
    lease_seconds = Float(30.0, help="How long a worker holds a job without renewing it; a "
                                     "worker that died loses its jobs after this.").tag(config=True)
    poll_seconds = Float(0.02, help="How often an idle worker looks for jobs.").tag(config=True)
    session_hours = Float(12.0, help="How long a browser sign-in lasts.").tag(config=True)
    sign_in_attempts = Int(5, help="Failed sign-ins allowed per person, and per address, in "
                                   "`sign_in_window_minutes`.").tag(config=True)
    sign_in_window_minutes = Float(15.0, help="The window of `sign_in_attempts`."
                                   ).tag(config=True)
    course_sync_seconds = Float(30.0, help=(
        "How often the embedded worker brings the course's files (gradebook.db, autograded/, "
        "feedback/) up to date with results it did not record itself: other machines' "
        "workers, confirmed regrades.")).tag(config=True)
    retention_days = Int(0, help="Submissions older than this many days are deleted by "
                                 "`autograder service purge` (0: kept).").tag(config=True)

    @validate(*POSITIVE)
    def _positive(self, proposal: Any) -> float:
        value = proposal["value"]
        if not (value > 0 and math.isfinite(value)):  # NaN too
            raise TraitError(f"must be a positive number, got {value!r}")
        return value

    @validate(*AT_LEAST_ONE)
    def _at_least_one(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"must be 1 or more, got {proposal['value']!r}")
        return proposal["value"]

    @validate("port")
    def _port(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= 65535:
            raise TraitError(f"must be a port number, 1 to 65535, got {proposal['value']!r}")
        return proposal["value"]

    @validate("retention_days")
    def _retention(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"must be 0 (kept) or more days, got {proposal['value']!r}")
        return proposal["value"]


def service_settings(course: Course) -> Service:
    """The course's `c.Service` settings, or ServiceSettingsError naming the one that is wrong
    (traitlets alone would ignore a typo'd name with a warning, and fail on a bad value with
    a traceback)."""
    config = course.config if course.config is not None else Config()
    given = config.Service.items() if "Service" in config else []
    check_settings(Service, given, "c.Service.", course.root / "nbgrader_config.py",
                   ServiceSettingsError)
    return Service(config=config)


def check_course_settings(course: Course) -> Service:
    """What `serve` and `worker` check before starting: the c.Service settings and every
    assignment's policy (c.AssignmentPolicy), so that a typo stops the start with one line
    rather than fail each student's upload."""
    from autograder.commands import known_assignments
    from autograder.service.policy import policy_for

    if course.config is not None:
        check_class_names(course.config, course.root / "nbgrader_config.py",
                          ServiceSettingsError)
    settings = service_settings(course)
    for assignment in known_assignments(course):
        policy_for(course, assignment)
    return settings
