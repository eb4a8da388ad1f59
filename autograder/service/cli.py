"""The service's commands: `serve`, `worker`, `submit`, `token`, `service` (argparse only here;
each command imports what it needs when it runs, so `autograder --help` stays fast)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

SERVICE_COMMANDS = ("serve", "worker", "submit", "token", "service")
DATABASE_HELP = ("SQLAlchemy URL (default: c.Service.database_url, else "
                 "<course>/service/service.db)")


def add_service_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    serve = command("serve", help="run the grading service (HTTP API and one embedded worker)")
    serve.add_argument("--database", help=DATABASE_HELP)
    serve.add_argument("--host", help="address to listen on (default: c.Service.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: c.Service.port)")
    serve.add_argument("--no-worker", action="store_true",
                       help="no embedded worker: `autograder worker` runs elsewhere")
    serve.add_argument("--demo", action="store_true",
                       help="serve a scratch copy of the course with the shipped examples' "
                            "students, printing their tokens (what `make serve` runs)")
    serve.add_argument("--into", type=Path, help="--demo: folder for the scratch course "
                                                 "(default: a new temporary folder)")
    serve.add_argument("--unsafe", action="store_true",
                       help="the embedded worker grades without root (see `grade --unsafe`)")

    worker = command("worker", help="grade the service's queued submissions")
    worker.add_argument("--database", help=DATABASE_HELP)
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
    token.add_argument("action", choices=("issue", "revoke", "list", "password"),
                       help="password ID: set the person's browser sign-in password (asked "
                            "for, or one line on standard input)")
    token.add_argument("person", nargs="?", help="the person's id (issue: omit with --roster)")
    token.add_argument("--roster", action="store_true",
                       help="issue: one token for every rostered student, as a CSV")
    token.add_argument("--output", type=Path, help="--roster: the CSV to write")
    token.add_argument("--database", help=DATABASE_HELP)

    service = command("service", help="the service's records: bring the course's files up to "
                                      "date, purge old submissions, delete a student's data")
    service.add_argument("action", choices=("sync", "purge", "delete-student"))
    service.add_argument("target", nargs="?", help="sync: the assignment (default: every one "
                                                   "the service graded); delete-student: the id")
    service.add_argument("--days", type=int, help="purge: submissions older than this many days "
                                                  "(default: c.Service.retention_days)")
    service.add_argument("--database", help=DATABASE_HELP)
    service.add_argument("--force", action="store_true",
                         help="sync: write every student's counted submission again (after a "
                              "`grade` run on the course changed gradebook.db)")


def run_service_command(args: argparse.Namespace) -> int:
    if args.command == "submit":
        return _submit(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "token":
        return _run_token(args)
    if args.command == "worker":
        from autograder.service.worker import run_worker_command

        return run_worker_command(args)
    if args.command == "service":
        return _run_service(args)
    raise NotImplementedError(args.command)


MIN_PASSWORD = 10


def say_database(command: str, db: object) -> None:
    """Which database a command uses, on stderr (stdout may be a token a script reads): a
    token issued into one database and served from another is every student's 401."""
    import sys

    print(f"autograder {command}: database {db.describe()}", file=sys.stderr, flush=True)


def _new_password(person: str) -> str:
    """Asked for twice at a terminal; else one line of standard input (scripts)."""
    import getpass
    import sys

    from autograder.errors import UserError

    if sys.stdin.isatty():
        password = getpass.getpass(f"new password for {person}: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ: nothing was changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters: nothing was "
                        "changed")
    return password


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
    import sys

    from autograder.course import Course
    from autograder.errors import UserError
    from autograder.service.serve import prepare_demo, serve

    course = Course.load(args.course)
    database = args.database
    if args.demo:
        if database:
            raise UserError("--demo makes its own database: no --database with it")
        course, database = prepare_demo(course, args.into, sys.stdout)
    elif args.into:
        raise UserError("--into goes with --demo")
    return serve(course, database_url=database, host=args.host, port=args.port,
                 worker=not args.no_worker, unsafe=args.unsafe)


def _repoint_queued(course: object, db: object) -> None:
    """Uploads queued for a version of their assignment the course no longer has (tests.py
    or the release changed meanwhile) are moved to the current one: graded, not stranded."""
    from autograder.assignment import Assignment
    from autograder.errors import UserError
    from autograder.service.queue import waiting_versions
    from autograder.service.worker import repoint_queued

    for assignment in sorted({name for name, _ in waiting_versions(db)}):
        try:
            current = Assignment.load(course, assignment).fingerprint
        except UserError as error:
            print(f"{assignment}: queued uploads left as they are: {error}")
            continue
        moved = repoint_queued(db, assignment, current)
        if moved:
            print(f"{assignment}: {moved} queued upload(s) named an older version; they "
                  "will be graded with the current one")


def _run_service(args: argparse.Namespace) -> int:
    """`service sync [ASSIGNMENT]`, `service purge [--days N]`, `service delete-student ID`
    (audited as the command line's user)."""
    import getpass
    import json

    from autograder.course import Course
    from autograder.errors import UserError
    from autograder.results import clean_text
    from autograder.service import course_sync, retention
    from autograder.service.database import Database
    from autograder.service.models import AuditEntry
    from autograder.service.settings import Service

    course = Course.load(args.course)
    if args.action == "delete-student" and not args.target:
        raise UserError("service delete-student: give the student's id")
    if args.action == "purge" and args.target:
        raise UserError("service purge takes no id: --days N, or c.Service.retention_days")
    db = Database.for_course(course, args.database)
    say_database("service", db)
    try:
        db.upgrade()
        if args.action == "sync":
            _repoint_queued(course, db)
            failed = 0
            for assignment in ([args.target] if args.target
                               else course_sync.synced_assignments(db)):
                report = course_sync.sync_all(course, db, assignment, force=args.force)
                failed += len(report.failed)
                print(f"{assignment}: {len(report.written)} written, {report.unchanged} "
                      f"already up to date, {len(report.failed)} failed")
                for line in report.failed:
                    print(f"  {clean_text(line, 400)}")
            return 1 if failed else 0
        if args.action == "purge":
            days = args.days if args.days is not None else Service(
                config=course.config).retention_days
            if days <= 0:
                print("nothing purged: the retention period is 0 (kept); --days N, or "
                      "c.Service.retention_days")
                return 0
            print(f"purged {retention.purge_older_than(db, days)} submission(s) older than "
                  f"{days} days")
            return 0
        shown = clean_text(args.target, 100)
        with db.session() as session:
            counts = retention.student_data_counts(session, args.target)
            if not any(counts.values()):  # a typo'd id: not "0 rows deleted", exit 0
                raise UserError(f"service delete-student: the service keeps nothing of "
                                f"{shown!r} (no submission, token or sign-in): check the id; "
                                "nothing was deleted")
            session.add(AuditEntry(actor=f"cli:{getpass.getuser()}",
                                   action="student.delete_data",
                                   target=clean_text(args.target, 100),
                                   old_value=json.dumps(counts), new_value="deleted"))
        print(f"deleted {sum(counts.values())} row(s) of {shown}: "
              + ", ".join(f"{count} {table}" for table, count in counts.items()))
        print(f"kept: {retention.KEPT}")
        return 0
    finally:
        db.dispose()


def _run_token(args: argparse.Namespace) -> int:
    """`token issue ID`, `token issue --roster --output CSV`, `token revoke ID`, `token list`.
    People are brought up to date from the roster and c.Service.instructors first."""
    import csv
    import io

    from autograder.course import Course
    from autograder.errors import UserError
    from autograder.export import neutralised
    from autograder.files import write_atomic
    from autograder.service import auth
    from autograder.service.database import Database
    from autograder.service.settings import service_settings

    course = Course.load(args.course)
    if args.action == "issue" and args.roster == bool(args.person):
        raise UserError("token issue: give a person's id, or --roster (not both)")
    if args.roster and (args.action != "issue" or args.output is None):
        raise UserError("--roster goes with `token issue` and needs --output FILE.csv")
    if args.action in ("revoke", "password") and not args.person:
        raise UserError(f"token {args.action}: give the person's id")
    db = Database.for_course(course, args.database)
    say_database("token", db)
    try:
        db.upgrade()
        with db.session() as session:
            auth.sync_people(session, course, list(service_settings(course).instructors))
            if args.action == "issue" and args.roster:
                issued = auth.issue_roster_tokens(session, course)
                table = io.StringIO()
                writer = csv.writer(table)
                writer.writerow(["id", "name", "email", "token"])
                for row in issued:
                    writer.writerow([neutralised(cell) for cell in row])
                # mkstemp's file is the owner's alone (0600): the tokens are secrets
                write_atomic(args.output, table.getvalue().encode())
                print(f"wrote {len(issued)} tokens to {args.output} (readable by you only; "
                      "earlier tokens still work until revoked)")
            elif args.action == "issue":
                print(auth.issue_token(session, args.person))
            elif args.action == "password":
                auth.set_password(session, args.person, _new_password(args.person))
                print(f"password set for {args.person}: they may sign in at /api/session")
            elif args.action == "revoke":
                count = auth.revoke_tokens(session, args.person)
                print(f"revoked {count} token(s) of {args.person}; their sign-ins ended")
            else:
                for person_id, role, live in auth.token_counts(session):
                    print(f"{person_id}\t{role}\t{live} live token(s)")
    finally:
        db.dispose()
    return 0
