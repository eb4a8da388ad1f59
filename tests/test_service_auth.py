"""People, tokens and sign-in, for real: tokens stored only hashed and revocable, the
`autograder token` commands, browser sessions with their cookie and CSRF token, the sign-in
limit per person and per address (shared through the database), and the client's address
behind trusted proxies only."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import select, update
from test_service_api import (
    INSTRUCTOR,
    STUDENT_A,
    STUDENT_B,
    URL,
    Running,
    notebook_bytes,
    start,
)

from autograder.course import Course
from autograder.service import auth
from autograder.service.database import Database
from autograder.service.models import ApiToken, Person, Role, SignInAttempt, WebSession, utcnow

PASSWORD = "correct horse battery staple"
PROXY = "10.9.0.1"


@pytest.fixture(scope="module")
def notebook(course: Course, solution: dict[str, str]) -> bytes:
    return notebook_bytes(course, solution)


@pytest.fixture
def signing(course: Course, database_url: str) -> Iterator[Running]:
    service = start(course, database_url, sign_in_attempts=3, sign_in_window_minutes=10,
                    trusted_proxies=[PROXY, "10.8.0.0/16"])
    with service.db.session() as session:
        auth.set_password(session, STUDENT_A, PASSWORD)
        auth.set_password(session, STUDENT_B, PASSWORD)
    with service.client:
        yield service
    service.db.dispose()


def sign_in(service: Running, person: str = STUDENT_A, password: str = PASSWORD,
            **kwargs: object) -> httpx.Response:
    return service.client.post("/api/session", json={"id": person, "password": password},
                               **kwargs)


# --- tokens ----------------------------------------------------------------------------------

def test_tokens_are_random_hashed_and_revocable(course: Course, database_url: str) -> None:
    service = start(course, database_url)
    token = service.tokens[STUDENT_A]
    assert len(token) >= 43 and token != service.tokens[STUDENT_B]
    with service.db.session() as session:
        hashes = list(session.scalars(select(ApiToken.token_hash)))
        assert auth.hash_token(token) in hashes and token not in hashes
        assert auth.authenticate(session, f"Bearer {token}", None) == auth.Principal(
            STUDENT_A, Role.STUDENT)
        assert auth.authenticate(session, f"Bearer {token}x", None) is None
        assert auth.authenticate(session, f"Basic {token}", None) is None
        assert auth.authenticate(session, None, None) is None
        assert auth.revoke_tokens(session, STUDENT_A) == 1
        assert auth.authenticate(session, f"Bearer {token}", None) is None
        with pytest.raises(auth.UnknownPerson):
            auth.issue_token(session, "nobody-here")
    with service.client:
        refused = service.client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert service.client.get("/api/me", headers=service.auth(STUDENT_B)).status_code == 200
    service.db.dispose()


def autograder(course_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autograder.cli", "--course", str(course_root),
                           *args], capture_output=True, text=True)


def test_token_commands(course: Course, database_url: str, tmp_path: Path) -> None:
    """`autograder token`: people synced from the roster and c.Service.instructors; one
    token, the whole roster as a CSV only its owner can read, revoke, list."""
    root = tmp_path / "course"
    shutil.copytree(course.root, root, ignore=shutil.ignore_patterns("service.db*"))
    with (root / "nbgrader_config.py").open("a") as config:
        config.write(f"\nc.Service.instructors = [{INSTRUCTOR!r}]\n")
    roster = tmp_path / "roster.csv"
    roster.write_text("id,first_name,last_name,email\n"
                      "10001,Ada,Alvarez,ada@example.org\n"
                      "10002,=HYPERLINK(\"x\"),Brandt,bo@example.org\n")
    done = autograder(root, "roster", "import", str(roster))
    assert done.returncode == 0, done.stderr

    one = autograder(root, "token", "issue", INSTRUCTOR, "--database", database_url)
    assert one.returncode == 0, one.stderr
    instructor_token = one.stdout.strip()
    output = tmp_path / "tokens.csv"
    many = autograder(root, "token", "issue", "--roster", "--output", str(output),
                      "--database", database_url)
    assert many.returncode == 0, many.stderr
    assert stat.S_IMODE(os.stat(output).st_mode) == 0o600
    # (the copied course's gradebook.db may hold the students earlier tests graded)
    rows = [row for row in csv.DictReader(output.open()) if row["id"] in ("10001", "10002")]
    assert [row["id"] for row in rows] == ["10001", "10002"]
    assert rows[1]["name"].startswith("'=")  # not a formula in a spreadsheet
    unknown = autograder(root, "token", "issue", "99999", "--database", database_url)
    assert unknown.returncode == 2 and "99999" in unknown.stderr

    db = Database(database_url)
    with db.session() as session:
        assert auth.authenticate(session, f"Bearer {instructor_token}", None).is_instructor
        ada = auth.authenticate(session, f"Bearer {rows[0]['token']}", None)
        assert ada == auth.Principal("10001", Role.STUDENT)
        assert session.get(Person, "10001").email == "ada@example.org"
    listed = autograder(root, "token", "list", "--database", database_url)
    assert "10001\tstudent\t1 live" in listed.stdout and rows[0]["token"] not in listed.stdout
    revoked = autograder(root, "token", "revoke", "10001", "--database", database_url)
    assert revoked.returncode == 0 and "revoked 1" in revoked.stdout
    with db.session() as session:
        assert auth.authenticate(session, f"Bearer {rows[0]['token']}", None) is None
        assert auth.authenticate(session, f"Bearer {rows[1]['token']}", None) is not None

    # A browser password, from standard input (a script); argon2 in the database; too short
    # is refused and changes nothing.
    short = subprocess.run([sys.executable, "-m", "autograder.cli", "--course", str(root),
                            "token", "password", "10002", "--database", database_url],
                           input="short\n", capture_output=True, text=True)
    assert short.returncode == 2 and "at least" in short.stderr
    chosen = subprocess.run([sys.executable, "-m", "autograder.cli", "--course", str(root),
                             "token", "password", "10002", "--database", database_url],
                            input="correct horse battery\n", capture_output=True, text=True)
    assert chosen.returncode == 0, chosen.stderr
    with db.session() as session:
        stored = session.get(Person, "10002").password_hash
        assert stored.startswith("$argon2") and "correct horse" not in stored
        assert auth.sign_in(session, "10002", "correct horse battery", "127.0.0.1",
                            attempts=5, window_minutes=15) == auth.Principal("10002",
                                                                            Role.STUDENT)
    db.dispose()


# --- browser sessions and CSRF ---------------------------------------------------------------

def test_sign_in_sets_a_safe_cookie_and_csrf_guards_cookie_posts(signing: Running,
                                                                  notebook: bytes) -> None:
    answer = sign_in(signing)
    assert answer.status_code == 200, answer.text
    cookie_header = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie_header and "samesite=lax" in cookie_header
    assert "secure" not in cookie_header  # plain http here; see the https test
    csrf = answer.json()["csrf_token"]
    client = signing.client
    assert client.get("/api/me").json()["id"] == STUDENT_A  # the cookie alone reads
    files = {"notebook": ("backprop.ipynb", notebook, "application/json")}
    forged = client.post(URL, files=files)  # what a cross-site form could send
    assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
    wrong = client.post(URL, files=files, headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    assert signing.submissions() == 0
    assert client.post(URL, files=files, headers={"X-CSRF-Token": csrf}).status_code == 202
    # A bearer token needs no CSRF token (a browser never sends one by itself).
    client.cookies.clear()
    assert client.post(URL, files=files, headers=signing.auth(STUDENT_B)).status_code == 202


def test_an_empty_or_other_authorization_header_still_needs_csrf(signing: Running,
                                                                 notebook: bytes) -> None:
    """The cookie authenticates whenever no bearer token is given: an empty or a Basic
    Authorization header must not skip the CSRF check (found by an attack)."""
    sign_in(signing)
    files = {"notebook": ("backprop.ipynb", notebook, "application/json")}
    for header in ("", "Basic eDp5", "Token abc"):
        answer = signing.client.post(URL, files=files, headers={"Authorization": header})
        assert answer.status_code in (401, 403), (header, answer.text)
    assert signing.submissions() == 0


def test_sign_in_takes_json_only(signing: Running) -> None:
    """A cross-site form can post text/plain or a urlencoded body, not application/json: sign
    in is JSON only, so no page can sign a victim's browser into another account."""
    body = json.dumps({"id": STUDENT_A, "password": PASSWORD})
    for kind in ("text/plain", "application/x-www-form-urlencoded"):
        answer = signing.client.post("/api/session", content=body,
                                     headers={"Content-Type": kind})
        assert answer.status_code == 415, (kind, answer.text)
        assert "set-cookie" not in answer.headers
    with signing.db.session() as session:
        assert session.scalars(select(WebSession)).all() == []
    deep = signing.client.post("/api/session", content="[" * 10_000,  # under 16 KB
                               headers={"Content-Type": "application/json"})
    assert deep.status_code == 400  # nested too deeply: the client's input, not a bug
    assert sign_in(signing).status_code == 200


def test_sign_out_needs_csrf_and_ends_the_session(signing: Running) -> None:
    csrf = sign_in(signing).json()["csrf_token"]
    assert signing.client.delete("/api/session").status_code == 403
    assert signing.client.get("/api/me").status_code == 200
    assert signing.client.delete("/api/session", headers={"X-CSRF-Token": csrf}
                                 ).status_code == 200
    with signing.db.session() as session:
        assert session.scalars(select(WebSession)).all() == []


def test_an_expired_or_stolen_hash_is_no_session(signing: Running) -> None:
    assert sign_in(signing).status_code == 200
    cookie = signing.client.cookies[auth.SESSION_COOKIE]
    with signing.db.session() as session:
        stored = session.scalars(select(WebSession.id_hash)).one()
        assert stored == auth.hash_token(cookie) and cookie not in stored
    signing.client.cookies.clear()
    signing.client.cookies[auth.SESSION_COOKIE] = stored  # the database's copy is useless
    assert signing.client.get("/api/me").status_code == 401
    signing.client.cookies[auth.SESSION_COOKIE] = cookie
    assert signing.client.get("/api/me").status_code == 200
    with signing.db.session() as session:
        session.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert signing.client.get("/api/me").status_code == 401


def test_cookie_is_secure_over_https(course: Course, database_url: str) -> None:
    from litestar.testing import TestClient

    service = start(course, database_url)
    with service.db.session() as session:
        auth.set_password(session, STUDENT_A, PASSWORD)
    with TestClient(service.app, base_url="https://grader.example") as client:
        answer = client.post("/api/session", json={"id": STUDENT_A, "password": PASSWORD})
        assert answer.status_code == 200 and "secure" in answer.headers["set-cookie"].lower()
    service.db.dispose()


def test_nobody_signs_in_without_a_password(signing: Running) -> None:
    with signing.db.session() as session:
        session.execute(update(Person).where(Person.id == STUDENT_B).values(password_hash=None))
    assert sign_in(signing, STUDENT_B, "").status_code == 401
    assert sign_in(signing, STUDENT_B, PASSWORD).status_code == 401
    assert sign_in(signing, "no-such-person", PASSWORD).status_code == 401


# --- the sign-in limit -----------------------------------------------------------------------

def test_sign_in_limit_per_person(signing: Running) -> None:
    """Three failures for A from three addresses (behind the trusted proxy): A is locked out,
    even with the right password; B, from one of those addresses, is not."""
    for n in range(3):
        assert peer_request(signing, PROXY, f"192.0.2.{n}", STUDENT_A, "wrong"
                            ).status_code == 401
    answer = peer_request(signing, PROXY, "192.0.2.50", STUDENT_A, PASSWORD)
    assert answer.status_code == 429 and 1 <= int(answer.headers["Retry-After"]) <= 600
    assert "set-cookie" not in answer.headers
    assert peer_request(signing, PROXY, "192.0.2.0", STUDENT_B, PASSWORD).status_code == 200


def peer_request(service: Running, peer: str, forwarded: str | None, person: str,
                 password: str) -> httpx.Response:
    """One sign-in as it arrives over a socket from `peer` (httpx's ASGI transport sets the
    connection's address), through the real app."""
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=service.app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://grader") as client:
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            return await client.post("/api/session", json={"id": person, "password": password},
                                     headers=headers)
    return anyio.run(go)


def attempts_by_address(service: Running) -> dict[str, int]:
    with service.db.session() as session:
        found: dict[str, int] = {}
        for address in session.scalars(select(SignInAttempt.address)):
            found[address] = found.get(address, 0) + 1
        return found


def test_a_forged_forwarded_for_from_an_untrusted_peer_is_ignored(signing: Running) -> None:
    """An attacker rotating X-Forwarded-For on each attempt is still one address; so each
    failure counts against the peer, and the address limit stops them across person ids."""
    for n, person in enumerate(("x1", "x2", "x3")):
        answer = peer_request(signing, "203.0.113.7", f"198.51.100.{n}", person, "guess")
        assert answer.status_code == 401
    assert attempts_by_address(signing) == {"203.0.113.7": 3}
    blocked = peer_request(signing, "203.0.113.7", "198.51.100.99", STUDENT_A, PASSWORD)
    assert blocked.status_code == 429 and blocked.headers["Retry-After"]
    other = peer_request(signing, "203.0.113.8", None, STUDENT_A, PASSWORD)
    assert other.status_code == 200  # another address, and A had no failures


def test_behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_hop(
        signing: Running) -> None:
    # client-written entries on the left are ignored; trusted hops on the right are skipped
    peer_request(signing, PROXY, "6.6.6.6, 198.51.100.4, 10.8.3.3", "x1", "guess")
    peer_request(signing, "10.8.0.9", "198.51.100.5", "x2", "guess")
    assert attempts_by_address(signing) == {"198.51.100.4": 1, "198.51.100.5": 1}


def test_client_address_rules() -> None:
    proxies = auth.parse_proxies(["10.0.0.1", "fd00::/8"])
    assert auth.client_address("192.0.2.1", ["1.1.1.1"], proxies) == "192.0.2.1"
    assert auth.client_address("10.0.0.1", ["1.1.1.1, 2.2.2.2"], proxies) == "2.2.2.2"
    assert auth.client_address("fd00::5", ["2.2.2.2", "10.0.0.1"], proxies) == "2.2.2.2"
    assert auth.client_address("10.0.0.1", [], proxies) == "10.0.0.1"
    assert auth.client_address("10.0.0.1", ["garbage, 3.3.3.3"], proxies) == "3.3.3.3"
    assert auth.client_address("192.0.2.1", ["1.1.1.1"], []) == "192.0.2.1"
    with pytest.raises(auth.UserError):
        auth.parse_proxies(["not-an-address"])


def test_the_limit_is_shared_by_every_process(signing: Running, course: Course) -> None:
    """Two apps (two service processes) on one database see the same failures."""
    from litestar.testing import TestClient

    from autograder.service.app import create_app
    from autograder.service.settings import Service

    other = create_app(course, signing.db, Service(config=course.config, sign_in_attempts=3))
    with TestClient(other) as second:
        for client in (signing.client, second, signing.client):
            client.post("/api/session", json={"id": STUDENT_A, "password": "wrong"})
        assert second.post("/api/session", json={"id": STUDENT_A, "password": PASSWORD}
                           ).status_code == 429


def test_tokens_survive_the_spreadsheet_safe_csv() -> None:
    """A token mailed out in `token issue --roster`'s CSV is written as is: none starts with a
    character (- = + @) that the CSV's formula guard would prefix with a quote."""
    from autograder.export import neutralised

    tokens = [auth.new_token() for _ in range(5000)]
    assert all(neutralised(token) == token for token in tokens)
    assert len(set(tokens)) == len(tokens)
