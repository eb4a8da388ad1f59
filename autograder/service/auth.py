"""Who is asking: people, API tokens, browser sessions, passwords, and the sign-in rate limit.

- People come from the roster (students) and `c.Service.instructors` (`sync_people`).
- An API token is 32 random bytes (urlsafe); only its sha256 is stored, so a copy of the
  database gives no usable token. Revoking marks the row, it never deletes it.
- A browser session is a random cookie value whose sha256 is a WebSession row; it expires
  after `c.Service.session_hours`. Its CSRF token is derived from the cookie value (a keyed
  hash), so a cross-site page, which can neither read the cookie (HttpOnly) nor the sign-in
  answer, cannot forge the `X-CSRF-Token` header that every cookie-authenticated POST/DELETE
  needs. A bearer token needs no CSRF token: a browser never adds it on its own.
- Passwords are optional (argon2id via argon2-cffi); sign-in failures are counted in
  SignInAttempt rows, per person AND per address, so every service process shares the limit.
- The client's address is the socket peer, unless that peer is a configured trusted proxy:
  then the right-most X-Forwarded-For entry that is not one (a client can prepend anything).

`principal` (a Litestar dependency: 401 when missing, wrong or revoked) and `instructor_only`
(a guard: 403 for a student) are what routes use.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar.connection import ASGIConnection, Request
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from autograder.errors import UserError
from autograder.service.models import ApiToken, Person, Role, SignInAttempt, WebSession, utcnow

if TYPE_CHECKING:
    from litestar.handlers.base import BaseRouteHandler

    from autograder.course import Course

SESSION_COOKIE = "autograder_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_BYTES = 32
MAX_CREDENTIAL = 200  # longer than any token or cookie we issue: not even hashed
_hasher = PasswordHasher()
# A hash to verify against when the person is unknown or has no password, so that the answer
# takes as long as for a real one (no probing of ids by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UnknownPerson(UserError):
    """No such person in the service's database."""


@dataclass(frozen=True)
class Principal:
    id: str
    role: Role

    @property
    def is_instructor(self) -> bool:
        return self.role == Role.INSTRUCTOR


Who = NamedDependency[Principal]  # a route's `principal` parameter (create_app provides it)


TOKEN_PREFIX = "agt_"


def new_token() -> str:
    """A random token. The prefix makes it recognisable (secret scanners, a pasted log), and
    keeps its first character a letter: a token may start with "-" otherwise, which a
    spreadsheet-safe CSV cell would prefix with a quote (and the mailed token would fail)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


# --- people and tokens -----------------------------------------------------------------------

def sync_people(session: Session, course: Course, instructors: list[str]) -> None:
    """The roster's students and the configured instructors as Person rows (names and emails
    brought up to date; nobody is deleted: their submissions stay theirs)."""
    from autograder.results import clean_text
    from autograder.roster import roster_students

    wanted: dict[str, tuple[str, str, str]] = {}
    for student in roster_students(course):
        wanted[student.id] = (Role.STUDENT, clean_text(student.name, 300),
                              clean_text(student.email or "", 300))
    for person_id in instructors:
        name, email = wanted.get(person_id, (None, "", ""))[1:]
        wanted[person_id] = (Role.INSTRUCTOR, name, email)
    known = {person.id: person for person in
             session.scalars(select(Person).where(Person.id.in_(list(wanted))))} if wanted else {}
    for person_id, (role, name, email) in wanted.items():
        person = known.get(person_id)
        if person is None:
            session.add(Person(id=person_id, role=role, name=name, email=email))
        else:
            person.role, person.name = role, name or person.name
            person.email = email or person.email
    session.flush()


def issue_token(session: Session, person_id: str) -> str:
    """A new token for `person_id` (their earlier tokens keep working until revoked)."""
    if session.get(Person, person_id) is None:
        raise UnknownPerson(f"no person '{person_id}' in the service's database: import the "
                            "roster (`autograder roster import`) or add the id to "
                            "c.Service.instructors")
    token = new_token()
    session.add(ApiToken(person_id=person_id, token_hash=hash_token(token)))
    session.flush()
    return token


def revoke_tokens(session: Session, person_id: str) -> int:
    """Revoke every live token of `person_id` and end their browser sessions; how many tokens."""
    now = utcnow()
    done = session.execute(update(ApiToken)
                           .where(ApiToken.person_id == person_id, ApiToken.revoked_at.is_(None))
                           .values(revoked_at=now))
    session.execute(delete(WebSession).where(WebSession.person_id == person_id))
    return done.rowcount or 0


def issue_roster_tokens(session: Session, course: Course) -> list[tuple[str, str, str, str]]:
    """(id, name, email, token) for every rostered student: one new token each."""
    from autograder.roster import roster_students

    issued = []
    for student in roster_students(course):
        person = session.get(Person, student.id)
        if person is None or person.role != Role.STUDENT:
            continue  # sync_people first; an instructor in the roster gets no student token
        issued.append((person.id, person.name, person.email, issue_token(session, person.id)))
    return issued


def token_counts(session: Session) -> list[tuple[str, str, int]]:
    """(id, role, live tokens) for every person."""
    live = (select(ApiToken.person_id, func.count().label("n"))
            .where(ApiToken.revoked_at.is_(None)).group_by(ApiToken.person_id).subquery())
    rows = session.execute(select(Person.id, Person.role, func.coalesce(live.c.n, 0))
                           .outerjoin(live, live.c.person_id == Person.id).order_by(Person.id))
    return [(person_id, role, int(count)) for person_id, role, count in rows]


# --- authentication --------------------------------------------------------------------------

def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > MAX_CREDENTIAL:
        return ""  # an Authorization header that is not a token we could have issued
    return value


def authenticate(session: Session, authorization: str | None,
                 cookie: str | None) -> Principal | None:
    """The person behind a bearer token (when an Authorization header is given, only it
    counts), else behind a live session cookie; None for anything missing, wrong, revoked or
    expired."""
    token = bearer_token(authorization)
    if token is not None:
        if not token:
            return None
        row = session.execute(
            select(Person.id, Person.role).join(ApiToken, ApiToken.person_id == Person.id)
            .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        ).first()
    elif cookie and len(cookie) <= MAX_CREDENTIAL:
        row = session.execute(
            select(Person.id, Person.role).join(WebSession, WebSession.person_id == Person.id)
            .where(WebSession.id_hash == hash_token(cookie), WebSession.expires_at > utcnow())
        ).first()
    else:
        return None
    return Principal(row[0], Role(row[1])) if row is not None else None


def csrf_token_for(cookie: str) -> str:
    """The CSRF token of one session (only whoever holds the cookie value can compute it)."""
    return hmac.new(cookie.encode(), b"autograder-csrf", "sha256").hexdigest()


def csrf_ok(cookie: str, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(csrf_token_for(cookie).encode(),
                                                header.encode("utf-8", errors="replace"))


def start_session(session: Session, person_id: str, hours: float) -> tuple[str, str, datetime]:
    """A new browser session: (cookie value, its CSRF token, when it expires)."""
    cookie = secrets.token_urlsafe(TOKEN_BYTES)
    expires = utcnow() + timedelta(hours=hours)
    session.add(WebSession(id_hash=hash_token(cookie), person_id=person_id, expires_at=expires))
    # Expired sessions of this person are of no use to anyone: drop them as we go.
    session.execute(delete(WebSession).where(WebSession.person_id == person_id,
                                             WebSession.expires_at <= utcnow()))
    return cookie, csrf_token_for(cookie), expires


def end_session(session: Session, cookie: str | None) -> None:
    if cookie and len(cookie) <= MAX_CREDENTIAL:
        session.execute(delete(WebSession).where(WebSession.id_hash == hash_token(cookie)))


# --- passwords and the sign-in limit ---------------------------------------------------------

def set_password(session: Session, person_id: str, password: str) -> None:
    person = session.get(Person, person_id)
    if person is None:
        raise UnknownPerson(f"no person '{person_id}' in the service's database")
    person.password_hash = _hasher.hash(password)


class SignInLimited(Exception):
    """Too many failed sign-ins for this person or from this address."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed sign-ins")
        self.retry_after = retry_after


def _limit_retry(session: Session, column: Any, value: str, attempts: int,
                 window: timedelta, now: datetime) -> float | None:
    """Seconds until one more attempt is allowed for `column == value`, or None if allowed."""
    recent = list(session.scalars(select(SignInAttempt.at)
                                  .where(column == value, SignInAttempt.at > now - window)
                                  .order_by(SignInAttempt.at.desc()).limit(attempts)))
    if len(recent) < attempts:
        return None
    return max(1.0, (recent[-1] + window - now).total_seconds())


def sign_in(session: Session, person_id: str, password: str, address: str, attempts: int,
            window_minutes: float) -> Principal | None:
    """The person, if the password is theirs; None if not (the failure is counted).
    SignInLimited, before the password is even looked at, when the person or the address has
    had `attempts` failures within the window."""
    now, window = utcnow(), timedelta(minutes=window_minutes)
    person_id, address = person_id[:100], address[:100]
    waits = [_limit_retry(session, column, value, attempts, window, now)
             for column, value in ((SignInAttempt.person_id, person_id),
                                   (SignInAttempt.address, address))]
    if any(wait is not None for wait in waits):
        raise SignInLimited(max(wait for wait in waits if wait is not None))
    person = session.get(Person, person_id) if person_id else None
    stored = person.password_hash if person is not None and person.password_hash else None
    try:
        good = _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        good = False
    if not good:
        session.add(SignInAttempt(person_id=person_id, address=address, at=now))
        return None
    if _hasher.check_needs_rehash(stored):
        person.password_hash = _hasher.hash(password)
    return Principal(person.id, Role(person.role))


# --- the client's address --------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(entries: list[str]) -> list[Network]:
    """c.Service.trusted_proxies as networks (an address is a /32 or /128)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise UserError(f"c.Service.trusted_proxies: '{entry}' is not an address or a "
                            "CIDR network") from None
    return networks


def _trusted(address: str, proxies: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str | None, forwarded_for: list[str], proxies: list[Network]) -> str:
    """The socket peer, unless it is a trusted proxy: then the right-most X-Forwarded-For
    entry that is not a trusted proxy (entries to its left are whatever the client wrote)."""
    peer = peer or "unknown"
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop[:100]
    return hops[0][:100] if hops else peer


# --- Litestar: the dependency and the guard --------------------------------------------------

def current_principal(connection: ASGIConnection) -> Principal:
    """Who sent this request (once per request); 401 if nobody, 403 for a cookie-authenticated
    POST/DELETE without its CSRF token."""
    state = connection.scope.setdefault("state", {})
    known = state.get("principal")
    if known is not None:
        return known
    authorization = connection.headers.get("authorization")
    cookie = connection.cookies.get(SESSION_COOKIE)
    db = connection.app.state.db
    with db.session(readonly=True) as session:
        found = authenticate(session, authorization, cookie)
    if found is None:
        raise NotAuthorizedException("a valid API token (Authorization: Bearer ...) or a "
                                     "signed-in session is needed",
                                     headers={"WWW-Authenticate": "Bearer"})
    # The session cookie is what authenticated, whenever no bearer token was given (an empty
    # or non-Bearer Authorization header included): then an unsafe request needs the CSRF token.
    if (bearer_token(authorization) is None
            and connection.scope.get("method", "GET") not in SAFE_METHODS
            and not csrf_ok(cookie or "", connection.headers.get(CSRF_HEADER))):
        raise PermissionDeniedException("the X-CSRF-Token header of this session is needed")
    state["principal"] = found
    return found


def principal(request: Request) -> Principal:
    """Litestar dependency (`Provide(principal, sync_to_thread=True)`, registered app-wide by
    create_app under the name "principal"): the authenticated person."""
    return current_principal(request)


def instructor_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Litestar guard: instructors only (401 for nobody, 403 for a student)."""
    if not current_principal(connection).is_instructor:
        raise PermissionDeniedException("instructors only")
