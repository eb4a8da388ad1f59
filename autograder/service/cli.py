"""The service's commands: `serve`, `worker`, `submit`, `token`, `service` (argparse only here;
each command imports what it needs when it runs, so `autograder --help` stays fast)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

SERVICE_COMMANDS = ("serve", "worker", "submit", "token", "service")


def add_service_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    serve = command("serve", help="run the grading service (HTTP API and one embedded worker)")
    serve.add_argument("--database", help="SQLAlchemy URL (default: c.Service.database_url, "
                                          "else <course>/service.db)")
    serve.add_argument("--host", help="address to listen on (default: c.Service.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: c.Service.port)")
    serve.add_argument("--no-worker", action="store_true",
                       help="no embedded worker: `autograder worker` runs elsewhere")
    serve.add_argument("--unsafe", action="store_true",
                       help="the embedded worker grades without root (see `grade --unsafe`)")

    worker = command("worker", help="grade the service's queued submissions")
    worker.add_argument("--database", help="SQLAlchemy URL (default: c.Service.database_url)")
    worker.add_argument("--scheduler", metavar="ADDRESS", help="grade on this Dask cluster")
    worker.add_argument("--workers", type=int, help="submissions graded at once (default: cores)")

    submit = command("submit", help="submit a notebook to a grading service and wait for "
                                    "its feedback")
    submit.add_argument("notebook", type=Path)
    submit.add_argument("--server", required=True, help="the service's URL")
    submit.add_argument("--assignment", help="default: the notebook's folder or name")
    submit.add_argument("--token-file", type=Path,
                        help="file holding your token (default: $AUTOGRADER_TOKEN)")
    submit.add_argument("--no-wait", action="store_true", help="only upload")

    token = command("token", help="issue or revoke API tokens")
    token.add_argument("action", choices=("issue", "revoke", "list"))
    token.add_argument("person", nargs="?", help="the person's id (issue: omit with --roster)")
    token.add_argument("--roster", action="store_true",
                       help="issue: one token for every rostered student, as a CSV")
    token.add_argument("--output", type=Path, help="--roster: the CSV to write")
    token.add_argument("--database", help="SQLAlchemy URL (default: c.Service.database_url)")


def run_service_command(args: argparse.Namespace) -> int:
    if args.command == "submit":
        return _submit(args)
    if args.command == "serve":
        return _serve(args)
    raise NotImplementedError(args.command)


def _submit(args: argparse.Namespace) -> int:
    import sys

    from autograder.service.client import SubmitError, read_token, submit

    try:
        token = read_token(args.token_file)
        outcome = submit(args.server, args.notebook, token, args.assignment, out=sys.stdout,
                         wait=not args.no_wait)
    except SubmitError as error:
        print(f"autograder submit: {error}", file=sys.stderr)
        return error.exit_code
    return outcome.exit_code


def _serve(args: argparse.Namespace) -> int:
    from autograder.course import Course
    from autograder.service.serve import serve

    return serve(Course.load(args.course), database_url=args.database, host=args.host,
                 port=args.port, worker=not args.no_worker, unsafe=args.unsafe)
