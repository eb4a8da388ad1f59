"""`autograder submit NOTEBOOK --server URL`: a student's upload, then its feedback.

Uploads the notebook's exact bytes (multipart field "notebook"), prints the submission's id and
queue position, waits for it to be graded or failed (long polls: `GET /api/submissions/{id}
?wait=S` answers as soon as the result is stored, or after S seconds with the status then, and
is asked again), and prints the feedback (points per test, messages). Everything the server
sends back may carry student text (the student's own messages, a test's message) and is
printed through `clean_text`.

The token comes from a file (`--token-file`) or `$AUTOGRADER_TOKEN`, never from the command line
(where `ps` and the shell's history would show it to others).

Exit codes: 0 graded; 1 the submission was refused (bad notebook, over budget), failed or not
graded (the service unreachable, a timeout); 2 a usage or authentication error (no token, token
rejected, no such file or assignment).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from autograder.errors import UserError
from autograder.results import clean_text, one_line

TOKEN_VARIABLE = "AUTOGRADER_TOKEN"
POLL_SECONDS = 0.05  # between asks when a server answers a wait at once (no long polls)
WAIT_SECONDS = 25.0  # one long poll (the server takes up to 30)
UPLOAD_TIMEOUT = 60.0
WAIT_TIMEOUT = 30 * 60.0  # a long queue before a deadline still ends, with a message
NOTEBOOK_TYPE = "application/x-ipynb+json"
EXIT_GRADED, EXIT_NOT_GRADED, EXIT_USAGE = 0, 1, 2
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


class SubmitError(UserError):
    """Why `submit` stopped, and its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_NOT_GRADED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Outcome:
    submission_id: str
    # The result's status (graded, timeout, crashed, invalid, error), "received" (results
    # hidden until the due date), "failed" (the service could not grade it), "queued" (no wait)
    status: str
    feedback: dict[str, Any] | None

    @property
    def exit_code(self) -> int:
        unusable = ("failed", "invalid", "error")
        return EXIT_NOT_GRADED if self.status in unusable else EXIT_GRADED


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str:
    """The token from `token_file` if given, else from $AUTOGRADER_TOKEN."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise SubmitError(f"{token_file}: cannot read the token file ({error})",
                              EXIT_USAGE) from None
        if not token:
            raise SubmitError(f"{token_file} is empty: put your token in it", EXIT_USAGE)
        return token
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise SubmitError(f"no token: set ${TOKEN_VARIABLE} or pass --token-file FILE (your "
                          "instructor issues tokens)", EXIT_USAGE)
    return token


def assignment_of(notebook: Path) -> str:
    """The assignment a notebook is for when not given: its name (backprop.ipynb), else its
    folder's (backprop/backprop (1).ipynb)."""
    for candidate in (notebook.stem, notebook.resolve().parent.name):
        if _PLAIN_NAME.match(candidate):
            return candidate
    raise SubmitError(f"{notebook}: cannot tell the assignment from its name: pass "
                      "--assignment NAME", EXIT_USAGE)


def _message(response: httpx.Response) -> str:
    """The server's own explanation of an error, cleaned, on one line."""
    try:
        body = response.json()
    except ValueError:
        return one_line(response.text or response.reason_phrase, 300)
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if body.get(key):
                return one_line(body[key], 300)
    return one_line(json.dumps(body), 300)


def _retry_at(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {}
    when = body.get("retry_at") if isinstance(body, dict) else None
    if when:
        try:
            local = datetime.fromisoformat(str(when)).astimezone()
            return f"your next submission is possible at {local:%Y-%m-%d %H:%M:%S %Z}"
        except ValueError:
            return f"your next submission is possible at {one_line(when, 60)}"
    seconds = response.headers.get("retry-after")
    if seconds and seconds.isdigit():
        return f"your next submission is possible in {int(seconds)} s"
    return "no submission is possible for now"


def _check(response: httpx.Response, what: str) -> None:
    """Raise the right SubmitError for an error response."""
    code = response.status_code
    if code < 400:
        return
    if code == 401:
        raise SubmitError("token rejected (401): check $AUTOGRADER_TOKEN or your token file; "
                          "ask your instructor for a new token if it was revoked", EXIT_USAGE)
    if code == 403:
        raise SubmitError(f"not allowed (403): {_message(response)}", EXIT_USAGE)
    if code == 404:
        raise SubmitError(f"{what}: not found (404): {_message(response)}", EXIT_USAGE)
    if code == 429:
        raise SubmitError(f"over your submission budget (429): {_retry_at(response)}; "
                          f"{_message(response)}")
    if code in (503, 507):
        raise SubmitError(f"the service cannot take it now ({code}): {_message(response)}; "
                          "nothing was stored: submit again in a minute")
    raise SubmitError(f"{what}: refused ({code}): {_message(response)}")


class Client:
    """The student's side of the service's API."""

    def __init__(self, server: str, token: str, timeout: float = UPLOAD_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not re.match(r"https?://", server):
            raise SubmitError(f"--server {one_line(server, 100)}: give the service's URL, "
                              "e.g. https://grader.example.edu", EXIT_USAGE)
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise SubmitError(f"{self.server}: no answer within {self.http.timeout.read} s "
                              f"({what})") from None
        except httpx.HTTPError as error:  # refused, name unknown, TLS, reset
            raise SubmitError(f"{self.server}: cannot reach the service ({what}): "
                              f"{one_line(error, 200) or type(error).__name__}") from None
        _check(response, what)
        try:
            body = response.json()
        except ValueError:
            raise SubmitError(f"{self.server}: the answer to {what} is not JSON: is this the "
                              "grading service?") from None
        if not isinstance(body, dict):
            raise SubmitError(f"{self.server}: unexpected answer to {what}")
        return body

    def upload(self, assignment: str, notebook: Path) -> dict[str, Any]:
        try:
            content = notebook.read_bytes()
        except OSError as error:
            raise SubmitError(f"{notebook}: cannot read it ({error.strerror})",
                              EXIT_USAGE) from None
        return self._request("POST", f"/api/assignments/{assignment}/submissions",
                             f"the upload to {assignment}",
                             files={"notebook": (notebook.name, content, NOTEBOOK_TYPE)})

    def status(self, submission_id: str, wait: float | None = None) -> dict[str, Any]:
        """The status now; with `wait`, once graded or failed, or after `wait` seconds."""
        params = {"wait": f"{wait:.3f}"} if wait is not None else None
        return self._request("GET", f"/api/submissions/{submission_id}", "the status",
                             params=params)

    def feedback(self, submission_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/submissions/{submission_id}/feedback",
                             "the feedback")

    def wait(self, submission_id: str, out: TextIO | None, poll: float = POLL_SECONDS,
             timeout: float = WAIT_TIMEOUT,
             told: tuple[str, object] | None = None) -> dict[str, Any]:
        """Wait (long polls) until graded or failed; print the position when it changes
        (`told`: the state and position already printed). `poll`: the pause before asking
        again when an answer came back early without a result."""
        deadline = time.monotonic() + timeout
        while True:
            asked = time.monotonic()
            left = max(0.001, deadline - asked)
            status = self.status(submission_id, wait=min(WAIT_SECONDS, left))
            state = str(status.get("status", ""))
            if state in ("graded", "failed"):
                return status
            shown = (state, status.get("position"))
            if out is not None and shown != told:
                print(_progress(status), file=out, flush=True)
                told = shown
            if time.monotonic() > deadline:
                raise SubmitError(f"not graded within {timeout:.0f} s: it stays queued; "
                                  f"see its status later (submission {submission_id})")
            if time.monotonic() - asked < poll:  # answered at once: not a long poll
                time.sleep(poll)


def _progress(status: dict[str, Any]) -> str:
    state = one_line(status.get("status", "?"), 40)
    if state == "queued":
        position, eta = status.get("position"), status.get("eta_seconds")
        where = f"position {position} in the queue" if position else "queued"
        return where + (f", about {float(eta):.0f} s" if isinstance(eta, int | float) else "")
    return state


def _points(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else one_line(value, 20)


def render_feedback(feedback: dict[str, Any]) -> str:
    """The student's feedback for a terminal: status, score, each test and its message."""
    status = one_line(feedback.get("status", "?"), 40)
    if status == "received":
        until = feedback.get("shown_at") or feedback.get("hidden_until")
        return ("received: results are shown after the due date"
                + (f" ({one_line(until, 40)})" if until else ""))
    lines = [f"status: {status}"]
    if "score" in feedback:
        lines[0] += (f"   score: {_points(feedback['score'])}"
                     + (f" / {_points(feedback['max_score'])}" if "max_score" in feedback
                        else ""))
    if feedback.get("reason"):
        lines.append(f"reason: {clean_text(feedback['reason'], 2000)}")
    for test in feedback.get("tests") or []:
        if not isinstance(test, dict):
            continue
        name = one_line(test.get("title") or test.get("name") or "?", 120)
        if "points" in test:
            mark = "ok  " if test.get("passed") else "FAIL"
            score = f"{_points(test['points'])}/{_points(test.get('max_points', '?'))}"
            lines.append(f"  {mark} {score:>9}  {name}")
        else:  # this test's result is not shown yet (exam mode per test)
            lines.append(f"  {'':>14}  {name}: {one_line(test.get('status', 'hidden'), 40)}")
        if test.get("message"):
            message = clean_text(test["message"], 2000).replace("\n", "\n        ")
            lines.append(f"        {message}")
    return "\n".join(lines)


def submit(server: str, notebook: Path, token: str, assignment: str | None = None,
           out: TextIO | None = None, wait: bool = True, poll: float = POLL_SECONDS,
           timeout: float = WAIT_TIMEOUT,
           transport: httpx.BaseTransport | None = None) -> Outcome:
    """Upload `notebook`, then (with `wait`) wait for its feedback; print as it goes."""
    if not notebook.is_file():
        raise SubmitError(f"{notebook}: no such notebook", EXIT_USAGE)
    assignment = assignment or assignment_of(notebook)
    if not _PLAIN_NAME.match(assignment):
        raise SubmitError(f"--assignment {one_line(assignment, 100)}: not an assignment name",
                          EXIT_USAGE)
    with Client(server, token, transport=transport) as client:
        sent = client.upload(assignment, notebook)
        submission_id = str(sent.get("id", ""))
        if not re.fullmatch(r"[0-9a-f]{1,64}", submission_id):
            raise SubmitError(f"{server}: the upload's answer has no submission id")
        if out is not None:
            print(f"submitted {notebook.name} to {assignment}: id {submission_id}, "
                  f"{_progress(sent)}", file=out, flush=True)
        if not wait:
            return Outcome(submission_id, "queued", None)
        status = client.wait(submission_id, out, poll, timeout,
                             told=(str(sent.get("status", "")), sent.get("position")))
        if status.get("status") == "failed":
            reason = one_line(status.get("reason") or "no reason given", 500)
            if out is not None:
                print(f"failed: {reason} (this submission is not charged)", file=out)
            return Outcome(submission_id, "failed", None)
        feedback = client.feedback(submission_id)
        if out is not None:
            print(render_feedback(feedback), file=out)
        return Outcome(submission_id, str(feedback.get("status", "graded")), feedback)
