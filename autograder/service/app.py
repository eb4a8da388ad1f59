"""The grading service's HTTP app (Litestar): routes, limits, and one answer for every fault.

Litestar rather than FastAPI because what an upload service exposed to a whole class needs is
built in: request body size limits (`request_max_body_size`, 413 before the body is read when
Content-Length says so, and while streaming otherwise), a limit on multipart parts
(`multipart_form_part_limit`), CSRF and rate-limit middleware, and an OpenAPI description of
every route (served at /schema, the JSON at /schema/openapi.json). FastAPI needs add-ons for
the first three.

The HTTP process never runs student code and never imports the hidden tests or torch: it reads
release notebooks, stores uploads and reads results (see student_api). Every error a client can
cause is a 4xx with a message naming what is wrong; the database unreachable is 503, its disk
full 507; anything else is a bug, logged once, 500.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from sqlalchemy.exc import DBAPIError, OperationalError

from autograder.course import Course
from autograder.errors import UserError
from autograder.lock import CourseBusy
from autograder.results import clean_text, one_line
from autograder.service import auth
from autograder.service.database import Database, DatabaseUnavailable
from autograder.service.settings import Service
from autograder.service.student_api import AssignmentCatalog, student_router

log = logging.getLogger("autograder.service")
MULTIPART_SLACK = 64 * 1024  # the multipart framing around a notebook of the largest size
MULTIPART_PARTS = 8  # one file is wanted; a few more are answered with a clear 400
DISK_FULL_SQLSTATE = "53100"  # PostgreSQL's disk_full
DISK_FULL_WORDS = ("database or disk is full", "no space left on device", "could not extend file")


def create_app(course: Course, db: Database, settings: Service | None = None) -> Litestar:
    """The service's app for `course`, storing in `db`."""
    settings = settings if settings is not None else Service(config=course.config)
    handlers: list[Any] = [student_router]
    # The instructor's routes (their own module, their own owner): part of the app wherever
    # that module exists.
    if importlib.util.find_spec("autograder.service.instructor_api") is not None:
        from autograder.service.instructor_api import instructor_router

        handlers.append(instructor_router)
    state = State({"course": course, "db": db, "settings": settings,
                   "catalog": AssignmentCatalog(course),
                   "proxies": auth.parse_proxies(list(settings.trusted_proxies)),
                   "graders": os.cpu_count() or 1})
    return Litestar(
        route_handlers=handlers,
        state=state,
        dependencies={"principal": Provide(auth.principal, sync_to_thread=True)},
        request_max_body_size=settings.max_upload_bytes + MULTIPART_SLACK,
        multipart_form_part_limit=MULTIPART_PARTS,
        openapi_config=OpenAPIConfig(title="autograder grading service", version="1",
                                     path="/schema"),
        exception_handlers={HTTPException: http_error, DatabaseUnavailable: unavailable,
                            DBAPIError: database_error, OSError: os_error,
                            CourseBusy: busy, UserError: user_error, RecursionError: too_deep,
                            Exception: bug},
    )


def _answer(status: int, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    return Response({"status_code": status, "detail": detail, **extra}, status_code=status,
                    headers=headers or {})


def http_error(request: Request, error: HTTPException) -> Response:
    extra = {}
    if error.extra:  # validation details: the client's own input, cleaned and capped
        extra["extra"] = clean_text(error.extra, 2000)
    return _answer(error.status_code, clean_text(error.detail, 1000), error.headers, **extra)


def unavailable(request: Request, error: Exception) -> Response:
    if _disk_full(error):  # the database layer may report a full disk as unavailable
        return _full(request, error)
    log.warning("database unavailable on %s: %s", _where(request), one_line_error(error))
    return _answer(503, "the service's database cannot be reached; nothing was stored: try "
                        "again shortly", {"Retry-After": "5"})


def _disk_full(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if getattr(seen, "sqlstate", None) == DISK_FULL_SQLSTATE:
            return True
        if any(words in str(seen).lower() for words in DISK_FULL_WORDS):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _full(request: Request, error: BaseException) -> Response:
    log.error("disk full on %s: %s", _where(request), one_line_error(error))
    return _answer(507, "the service's storage is full; nothing was stored: try again later",
                   {"Retry-After": "60"})


def database_error(request: Request, error: DBAPIError) -> Response:
    if _disk_full(error):
        return _full(request, error)
    if isinstance(error, OperationalError) or error.connection_invalidated:
        return unavailable(request, error)  # the server went away, refused, or timed out
    return bug(request, error)


def os_error(request: Request, error: OSError) -> Response:
    if _disk_full(error):
        return _full(request, error)
    return bug(request, error)


def busy(request: Request, error: CourseBusy) -> Response:
    """The course's files are held by another process (a `grade` run, gradebook.db locked):
    for a moment."""
    return _answer(503, clean_text(str(error), 1000), {"Retry-After": "5"})


def user_error(request: Request, error: UserError) -> Response:
    status = getattr(error, "status_code", 400)
    return _answer(status if isinstance(status, int) and 400 <= status < 500 else 400,
                   clean_text(getattr(error, "message", "") or str(error), 1000))


def too_deep(request: Request, error: RecursionError) -> Response:
    """JSON nested deeper than the decoder goes (a 100,000-deep list): the client's input."""
    return _answer(400, "the request's JSON is nested too deeply")


def _where(request: Request) -> str:
    """The request, for the log: the path is the client's text (cleaned, capped)."""
    return one_line(f"{request.method} {request.url.path}", 300)


def bug(request: Request, error: Exception) -> Response:
    log.error("unhandled error on %s", _where(request), exc_info=error)
    return _answer(500, "internal error (logged)")


def one_line_error(error: BaseException) -> str:
    return clean_text(str(error).splitlines()[0] if str(error) else type(error).__name__, 300)
