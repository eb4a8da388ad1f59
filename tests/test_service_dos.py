"""Denial of service against a real `autograder serve`: slow clients (half-sent headers, bodies
never finished) and greedy ones (huge sign-in bodies, heavy notebooks from a student with no
budget left) must not take the service from other students, nor its memory."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nbformat
import pytest
from conftest import make_course
from databases import ServeProcess, add_students, free_port, student_tokens, wait_for

from autograder.author import with_answers

STUDENTS = ["40001", "40002", "40003"]
HEADER_SECONDS = 3.0
BODY_SECONDS = 3.0
PER_ADDRESS = 32
MAX_CONNECTIONS = 256  # small, so that 300 sockets would take them all without the cap
OTHER_ADDRESS = "127.0.0.2"  # another client: a source address of its own on loopback
UPLOAD = "/api/assignments/backprop/submissions"


@pytest.fixture(scope="module")
def served(solution):  # noqa: ANN001 -> (ServeProcess, tokens, the solution's bytes)
    root = Path(tempfile.mkdtemp(prefix="agdos-course-"))
    os.chmod(root, 0o755)  # the HTTP process runs as nobody when the tests run as root
    course = make_course(root)
    with (root / "nbgrader_config.py").open("a") as config:
        config.write(f"\nc.Service.header_seconds = {HEADER_SECONDS}\n"
                     f"c.Service.body_seconds = {BODY_SECONDS}\n"
                     f"c.Service.connections_per_address = {PER_ADDRESS}\n"
                     f"c.Service.max_connections = {MAX_CONNECTIONS}\n"
                     "c.AssignmentPolicy.budget_capacity = 1\n"
                     "c.AssignmentPolicy.budget_refill_minutes = 600\n")
    add_students(root, STUDENTS)
    folder = Path(tempfile.mkdtemp(prefix="agdos-"))
    (folder / "db").mkdir()  # a folder of its own: serve hands it to the service's user
    url = f"sqlite:///{folder / 'db' / 'service.db'}"
    tokens = student_tokens(root, url)
    release = nbformat.read(course.release_dir("backprop") / "backprop.ipynb", as_version=4)
    answered = nbformat.writes(with_answers(release, solution)).encode()
    try:
        with ServeProcess(root, url, "--no-worker", log_dir=folder) as server:
            yield server, tokens, answered
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def heavy(notebook: bytes, outputs: int) -> bytes:
    """The attacker's notebook: the right answers, and `outputs` one-character stream outputs
    (cheap to send, costly for nbformat's validation)."""
    data = json.loads(notebook)
    cell = next(c for c in data["cells"] if c["cell_type"] == "code")
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}] * outputs
    return json.dumps(data, separators=(",", ":")).encode()


def half_open(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `seconds`, and what it sent before."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def test_half_open_requests_from_one_address_leave_the_service_to_others(served) -> None:  # noqa: ANN001
    server, tokens, _ = served
    attack = [half_open(server.port, b"GET /api/me HTTP/1.1\r\nHost: x\r\n") for _ in range(300)]
    try:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=OTHER_ADDRESS),
                          timeout=10) as other:
            started = time.monotonic()
            answer = other.get(f"{server.url}/api/me", headers=bearer(tokens[STUDENTS[2]]))
            took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert took < 2.0
        # One address holds at most PER_ADDRESS of them; the rest were closed at once.
        closed = sum(closed_within(sock, 0.01)[0] for sock in attack)
        assert closed == 300 - PER_ADDRESS
    finally:
        for sock in attack:
            sock.close()


def test_headers_or_body_never_finished_are_closed_after_their_deadline(served) -> None:  # noqa: ANN001
    server, _, _ = served
    slow_headers = half_open(server.port, b"GET /api/me HTTP/1.1\r\nHost: x\r\n")
    slow_body = half_open(server.port, b"POST /api/session HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Type: application/json\r\n"
                                       b"Content-Length: 100\r\n\r\n{\"id\": \"4")
    started = time.monotonic()
    try:
        for sock in (slow_headers, slow_body):
            closed, got = closed_within(sock, HEADER_SECONDS + 5 - (time.monotonic() - started))
            assert closed, "still open well after the deadline"
            assert got.startswith(b"HTTP/1.1 408")
        took = time.monotonic() - started
        assert HEADER_SECONDS - 0.5 < took < HEADER_SECONDS + 2
    finally:
        slow_headers.close()
        slow_body.close()


def test_a_huge_sign_in_body_is_refused_at_once_without_being_buffered(served) -> None:  # noqa: ANN001
    server, _, _ = served
    size = 5 * 1024 * 1024
    head = (b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % size)
    before = rss_mb(server.pid)

    def held() -> tuple[float, bytes, socket.socket]:  # all of the body but 10 bytes
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        started = time.monotonic()
        sock.sendall(head + b"{\"id\": \"" + b"x" * (size - 20))
        first = sock.recv(4096)
        return time.monotonic() - started, first, sock

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: held(), range(20)))
    try:
        for took, first, _sock in results:
            assert first.startswith(b"HTTP/1.1 413"), first[:200]
            assert took < 1.0
        grown = rss_mb(server.pid) - before
        assert grown < 50, f"the HTTP process grew {grown:.0f} MB"  # 20 x 5 MB held: 100+
    finally:
        for *_, sock in results:
            sock.close()


def test_an_over_budget_heavy_upload_is_refused_before_it_is_parsed(served) -> None:  # noqa: ANN001
    server, tokens, answered = served
    token = tokens[STUDENTS[0]]
    first = httpx.post(f"{server.url}{UPLOAD}", content=answered, timeout=30,
                       headers={**bearer(token), "Content-Type": "application/json"})
    assert first.status_code == 202, first.text  # the one submission of the budget
    attack = heavy(answered, 90_000)
    assert 4.4e6 < len(attack) < 5e6

    def upload() -> tuple[float, httpx.Response]:
        started = time.monotonic()
        answer = httpx.post(f"{server.url}{UPLOAD}", content=attack, timeout=60,
                            headers={**bearer(token), "Content-Type": "application/json"})
        return time.monotonic() - started, answer

    took, answer = upload()
    assert answer.status_code == 429, answer.text
    assert "Retry-After" in answer.headers
    assert took < 0.3
    before = rss_mb(server.pid)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: upload(), range(20)))
    assert [a.status_code for _, a in results] == [429] * 20
    assert max(t for t, _ in results) < 5.0  # parsed, each took ~2 s of the one GIL
    grown = rss_mb(server.pid) - before
    assert grown < 150, f"the HTTP process grew {grown:.0f} MB"  # parsed: ~75 MB each
    started = time.monotonic()
    other = httpx.get(f"{server.url}/api/me", headers=bearer(tokens[STUDENTS[2]]), timeout=10)
    assert other.status_code == 200 and time.monotonic() - started < 0.5


def test_a_notebook_of_ninety_thousand_outputs_is_refused_quickly(served) -> None:  # noqa: ANN001
    server, tokens, answered = served
    token = tokens[STUDENTS[1]]
    started = time.monotonic()
    answer = httpx.post(f"{server.url}{UPLOAD}", content=heavy(answered, 90_000), timeout=60,
                        headers={**bearer(token), "Content-Type": "application/json"})
    took = time.monotonic() - started
    assert answer.status_code == 422, answer.text
    assert "90000 outputs" in answer.json()["detail"]
    assert took < 1.0
    terms = httpx.get(f"{server.url}/api/assignments/backprop", headers=bearer(token)).json()
    assert terms["budget"]["remaining"] == 1  # refused: nothing charged


def test_uploads_beyond_the_parse_slots_wait_their_turn_then_get_503(monkeypatch) -> None:  # noqa: ANN001
    import asyncio
    from types import SimpleNamespace

    from autograder.service import student_api

    monkeypatch.setattr(student_api, "PARSE_WAIT_SECONDS", 0.3)
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace()))
    order: list[str] = []

    async def parse(name: str, seconds: float) -> None:
        async with student_api._parse_slot(request):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    async def scenario() -> BaseException | None:
        held = [asyncio.create_task(parse(n, 0.5)) for n in ("a", "b")]
        await asyncio.sleep(0.05)
        try:  # both slots taken for longer than the wait: refused, with when to come back
            await parse("late", 0.0)
        except student_api.ServiceBusy as busy:
            refused = busy
        else:
            refused = None
        await asyncio.gather(*held)
        await parse("after", 0.0)  # the slots came back
        return refused

    refused = asyncio.run(scenario())
    assert refused is not None and refused.status_code == 503
    assert refused.headers == {"Retry-After": "5"}
    assert order == ["a in", "b in", "a out", "b out", "after in", "after out"]


def test_a_trusted_proxy_is_not_capped_per_address() -> None:
    """Behind a reverse proxy every student's connection comes from the proxy's address: the
    per-address cap must not apply to it (the proxy limits its own clients), or a class of
    more than `connections_per_address` long-polling students would be refused."""
    import ipaddress
    import threading

    import uvicorn

    from autograder.service.http_limits import limited_protocol

    async def app(scope, receive, send):  # noqa: ANN001, ANN202 (a minimal ASGI app)
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def held_connections(exempt: list) -> int:  # noqa: ANN001
        """How many of 6 idle connections from 127.0.0.1 stay open, with a cap of 2."""
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                lifespan="off", ws="none",
                                http=limited_protocol(30, 30, 2, exempt=exempt))
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout=10)
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
        try:
            time.sleep(0.3)
            open_ = 0
            for held in sockets:
                held.settimeout(0.2)
                try:
                    open_ += held.recv(1) != b""  # closed by the cap: b"" at once
                except TimeoutError:
                    open_ += 1  # still open, waiting for our request
            return open_
        finally:
            for held in sockets:
                held.close()
            server.should_exit = True
            thread.join(10)

    assert held_connections([]) == 2
    assert held_connections([ipaddress.ip_network("127.0.0.1/32")]) == 6
