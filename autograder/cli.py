"""`autograder`: release, grade, export, demo. Heavy imports wait until a command needs them,
so that `autograder --help` answers at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autograder",
        description="Grade PyTorch notebooks with nbgrader's layout and gradebook; hidden tests "
                    "judge each submission outside the student's process.")
    parser.add_argument("--course", type=Path, default=Path("."),
                        help="course directory, holding nbgrader_config.py (default: .)")
    # --course is accepted after the subcommand too; there it is only set when given, so the
    # default above stands otherwise.
    anywhere = argparse.ArgumentParser(add_help=False)
    anywhere.add_argument("--course", type=Path, default=argparse.SUPPRESS,
                          help="course directory (also accepted before the command)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[anywhere], **kwargs)

    release = command("release", help="make release/<assignment>/ with nbgrader")
    release.add_argument("assignment")

    grade = command("grade", help="grade a submitted/ folder, an LMS zip, or one notebook")
    grade.add_argument("assignment")
    grade.add_argument("source", nargs="?", type=Path,
                       help="folder in nbgrader's <student>/<assignment>/ layout, .zip of "
                            "notebooks, or one .ipynb (default: the course's submitted/)")
    grade.add_argument("--student",
                       help="whose notebook SOURCE is (required for one .ipynb); without "
                            "SOURCE, grade again this student's submission in submitted/")
    grade.add_argument("--workers", type=int, help="submissions graded at once (default: cores)")
    grade.add_argument("--timeout", type=float, help="seconds per submission (default: "
                                                     "c.Autograder.timeout, else 60)")
    grade.add_argument("--scheduler", metavar="ADDRESS",
                       help="grade on this Dask cluster (default: c.Autograder.scheduler, "
                            "else the local pool)")
    grade.add_argument("--regrade", action="store_true",
                       help="grade again submissions already graded and unchanged")
    grade.add_argument("--unsafe", action="store_true",
                       help="grade even if a sandbox layer that protects the grader itself "
                            "(read-only installation, memory budget) is off, e.g. without "
                            "root; the output says so")

    export = command("export", help="write the gradebook as CSV or Canvas CSV")
    export.add_argument("assignment")
    export.add_argument("--format", choices=("csv", "canvas"), default="csv")
    export.add_argument("--output", type=Path, help="file to write (default: exports/...)")

    demo = command("demo", help="the instructor's cycle on the shipped examples, in a scratch "
                                "copy of the course (this course's files are left alone)")
    demo.add_argument("--into", type=Path, help="folder for the scratch course (default: a new "
                                                "folder in the system's temporary folder)")
    handout = command("handout", help="handout/<assignment>/: what a student gets (the release "
                                      "notebook and a README)")
    handout.add_argument("assignment")
    command("doctor", help="report which sandbox layers are active on this machine")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before or after grading: nothing half-done to report
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _skip_grammar_nobody_uses()
    for stream in (sys.stdout, sys.stderr):  # an ASCII terminal shows "?", never raises
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    if args.command == "grade" and args.workers is not None and args.workers < 1:
        return _fail("--workers must be at least 1")
    if args.command == "grade" and args.timeout is not None and args.timeout <= 0:
        return _fail("--timeout must be positive")
    from autograder.errors import USER_ERRORS
    from autograder.interrupts import Interrupted

    try:
        return _run(args)
    except USER_ERRORS as error:
        return _fail(str(error))
    except Interrupted as interrupted:
        print(interrupted, file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from autograder import commands
    from autograder.course import Course

    if args.command == "doctor":
        return 0 if commands.doctor(sys.stdout) else 1
    course = Course.load(args.course)
    if getattr(args, "assignment", None) is not None:
        commands.check_assignment_name(course, args.assignment)
    if args.command == "release":
        from autograder.release import release

        print(f"released {release(course, args.assignment)}")
    elif args.command == "grade":
        from autograder.summary import render

        run = commands.grade_run(course, args.assignment, args.source, args.student,
                                 args.workers, args.timeout, out=sys.stdout,
                                 regrade=args.regrade, scheduler=args.scheduler,
                                 unsafe=args.unsafe)
        if run.results:
            print(commands.show_table(course, args.assignment,
                                      [result.student_id for result in run.results]))
        print(f"wrote {commands.export(course, args.assignment)}")
        commands.print_safely(render(run), sys.stdout)  # the run ends with its summary
    elif args.command == "handout":
        from autograder.handout import build_handout

        print(f"wrote {build_handout(course, args.assignment)}: give students this folder "
              "(or its notebook); it holds nothing else of the course")
    elif args.command == "export":
        print(f"wrote {commands.export(course, args.assignment, args.format, args.output)}")
    elif args.command == "demo":
        from autograder.demo import run_demo

        run_demo(course, out=sys.stdout, into=args.into)
    return 0


def _skip_grammar_nobody_uses() -> None:
    """jsonschema, pulled in by nbformat and nbgrader, imports rfc3987-syntax when installed
    (jupyter-events installs it) only to check "iri" string formats, which notebooks and
    nbgrader never use; building its grammar costs 1.6 s per command. Marking the module
    absent makes jsonschema skip that check, as it does where the package is not installed."""
    sys.modules.setdefault("rfc3987_syntax", None)


def _fail(message: str) -> int:
    print(f"autograder: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
