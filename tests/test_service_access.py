"""Every route of the app's route table, every method, tried by the wrong people: nobody, a wrong
token, a revoked token, and student B against student A's submission and data. Each answer is
401, 403 or 404 (or B's own, harmless, answer) and no answer carries anything of A's.

The test walks `app.routes`: a route added later is tried too, and the test fails for a route
it has no recipe for (a path parameter it cannot fill, or a student route not listed here).
Instructor routes (/api/instructor/...) need no recipe beyond their path parameters: everyone
but an instructor must be refused."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from test_service_api import (
    INSTRUCTOR,
    NAMES,
    SECRET,
    STUDENT_A,
    STUDENT_B,
    Running,
    grade_queued,
    notebook_bytes,
    start,
)

from autograder.course import Course
from autograder.service import auth

# Routes anyone may call (what they answer is checked for A's data too).
PUBLIC = {("POST", "/api/session")}
PUBLIC_PREFIX = "/schema"  # the OpenAPI description and its viewers
# Student routes: what student B may get when aiming at A's things. 404 where A's id is in the
# path (the same as a nonexistent id); B's own, harmless answer where the route is B's own.
STUDENT_ROUTES = {
    ("GET", "/api/submissions/{submission_id:str}"): {404},
    ("GET", "/api/submissions/{submission_id:str}/feedback"): {404},
    ("GET", "/api/assignments/{assignment:str}/submissions"): {200},  # B's own history
    ("POST", "/api/assignments/{assignment:str}/submissions"): {202},  # B's own upload
    ("GET", "/api/assignments/{assignment:str}"): {200},  # B's own due date and budget
    ("GET", "/api/me"): {200},  # B
    ("DELETE", "/api/session"): {200},  # B's own sign-out
}
INSTRUCTOR_PREFIX = "/api/instructor"


@pytest.fixture(scope="module")
def notebook(course: Course, solution: dict[str, str]) -> bytes:
    return notebook_bytes(course, solution)


@pytest.fixture
def targets(course: Course, database_url: str, notebook: bytes) -> Iterator[tuple[Running,
                                                                                    dict]]:
    service = start(course, database_url)
    with service.client:
        first = service.upload(STUDENT_A, notebook).json()["id"]
        second = service.upload(STUDENT_A, notebook).json()["id"]
        grade_queued(service)
        with service.db.session() as session:
            revoked = auth.issue_token(session, STUDENT_A)
            auth.revoke_tokens(session, STUDENT_A)
            service.tokens[STUDENT_A] = auth.issue_token(session, STUDENT_A)
        # Every value a path parameter can take, as A's: a parameter not named here fails.
        values = {"submission_id": first, "id": first, "assignment": "backprop",
                  "student_id": STUDENT_A, "student": STUDENT_A, "a": "backprop",
                  "regrade_id": "1", "path": "", "file_name": "openapi.json"}
        yield service, {"values": values, "a_ids": [first, second], "revoked": revoked}
    service.db.dispose()


def route_table(service: Running) -> list[tuple[str, str]]:
    found = []
    for route in service.app.routes:
        for method in sorted(getattr(route, "methods", ())):
            if method in ("OPTIONS", "HEAD"):
                continue  # Litestar's own preflight and HEAD answers carry no data
            found.append((method, route.path))
    return found


def concrete(path: str, values: dict[str, str]) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1).split(":")[0]
        assert name in values, f"no recipe for the path parameter {name!r} of {path}"
        return values[name]

    return re.sub(r"\{([^}]+)\}", fill, path)


def leaks(text: str, a_ids: list[str]) -> list[str]:
    return [what for what in [*a_ids, NAMES[STUDENT_A], SECRET] if what in text]


def send(service: Running, method: str, path: str, headers: dict[str, str], notebook: bytes):  # noqa: ANN201
    if method in ("POST", "PUT", "PATCH"):
        if path.endswith("/submissions") and not path.startswith(INSTRUCTOR_PREFIX):
            return service.client.request(method, path, headers=headers, files={
                "notebook": ("backprop.ipynb", notebook, "application/json")})
        return service.client.request(method, path, headers=headers,
                                      json={"students": [STUDENT_A], "id": STUDENT_A,
                                            "password": "guess"})
    return service.client.request(method, path, headers=headers)


def test_every_route_refuses_the_wrong_people(targets: tuple[Running, dict],
                                              notebook: bytes) -> None:
    service, known = targets
    routes = route_table(service)
    listed = {(method, path) for method, path in routes}
    assert set(STUDENT_ROUTES) <= listed  # the recipes name real routes
    callers = {
        "nobody": {},
        "wrong token": {"Authorization": "Bearer " + "w" * 43},
        "not a bearer": {"Authorization": "Basic " + "w" * 20},
        "revoked token": {"Authorization": f"Bearer {known['revoked']}"},
        "student B": service.auth(STUDENT_B),
    }
    tried = 0
    for method, route in routes:
        path = concrete(route, known["values"])
        public = (method, route) in PUBLIC or route.startswith(PUBLIC_PREFIX)
        instructor = route.startswith(INSTRUCTOR_PREFIX)
        assert public or instructor or (method, route) in STUDENT_ROUTES, (
            f"no access recipe for {method} {route}: add it to STUDENT_ROUTES or PUBLIC")
        for who, headers in callers.items():
            answer = send(service, method, path, headers, notebook)
            tried += 1
            where = f"{who}: {method} {path} -> {answer.status_code} {answer.text[:200]}"
            assert not leaks(answer.text, known["a_ids"]), where
            assert answer.status_code != 500, where
            if public:
                continue
            if who != "student B":
                assert answer.status_code == 401, where
            elif instructor:
                assert answer.status_code == 403, where
            else:
                assert answer.status_code in STUDENT_ROUTES[(method, route)], where
    assert tried >= len(STUDENT_ROUTES) * len(callers)


def test_a_guessed_or_foreign_id_gets_the_same_answer(targets: tuple[Running, dict]) -> None:
    service, known = targets
    foreign = service.client.get(f"/api/submissions/{known['a_ids'][0]}",
                                 headers=service.auth(STUDENT_B))
    made_up = service.client.get(f"/api/submissions/{'0' * 32}", headers=service.auth(STUDENT_B))
    assert foreign.status_code == made_up.status_code == 404
    assert foreign.json() == made_up.json()
    # and A, the owner, does reach it (the refusals above are about who asks)
    own = service.client.get(f"/api/submissions/{known['a_ids'][0]}",
                             headers=service.auth(STUDENT_A))
    assert own.status_code == 200 and own.json()["status"] == "graded"
    history = service.client.get("/api/assignments/backprop/submissions",
                                 headers=service.auth(STUDENT_B)).json()
    assert history["submissions"] == [] and not leaks(json.dumps(history), known["a_ids"])


def test_instructor_guard_lets_instructors_through(targets: tuple[Running, dict]) -> None:
    """The 403s above come from the guard, not from a route that refuses everyone."""
    from litestar import get

    from autograder.service.auth import instructor_only

    service, _ = targets

    @get("/api/instructor/_probe", guards=[instructor_only], sync_to_thread=False)
    def probe() -> dict[str, bool]:
        return {"ok": True}

    service.app.register(probe)
    assert service.client.get("/api/instructor/_probe",
                              headers=service.auth(INSTRUCTOR)).status_code == 200
    assert service.client.get("/api/instructor/_probe",
                              headers=service.auth(STUDENT_A)).status_code == 403
    assert service.client.get("/api/instructor/_probe").status_code == 401
