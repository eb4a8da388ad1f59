"""`autograder`: release, grade, export, demo. Heavy imports wait until a command needs them,
so that `autograder --help` answers at once."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autograder.course import Course


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
                       help="folder in nbgrader's <student>/<assignment>/ layout, a "
                            "Canvas, Moodle or Blackboard download (.zip), or one .ipynb "
                            "with --student (default: the course's submitted/)")
    grade.add_argument("--student", help="student id (the LMS's id), required for one "
                                          ".ipynb SOURCE; without SOURCE, grade again this "
                                          "student's submission in submitted/")
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

    export = command(
        "export", help="write the final scores (gradebook.db's, manual grades and late "
                       "penalties included) as CSV, Canvas's gradebook import or Moodle's "
                       "grading worksheet")
    export.add_argument("assignment")
    export.add_argument("--format", choices=("csv", "canvas", "moodle"), default="csv")
    export.add_argument("--output", type=Path, help="file to write (default: exports/...)")
    export.add_argument("--template", type=Path,
                        help="the gradebook CSV downloaded from Canvas, or Moodle's grading "
                             "worksheet: its assignment column is filled, the rest kept")
    export.add_argument("--missing", choices=("zero", "blank"),
                        help="a rostered student with no submission: 0, as nbgrader export "
                             "does, or blank (default: c.ScoreSettings.missing, else zero)")
    export.add_argument("--feedback-comments", action="store_true", default=None,
                        help="moodle: also fill 'Feedback comments' with a one-line summary "
                             "(default: c.MoodleExport.feedback_comments)")

    feedback_zip = command(
        "feedback-zip", help="zip every student's feedback for the LMS's bulk upload (Canvas "
                             "'Re-upload submissions', Moodle 'Upload multiple feedback files')")
    feedback_zip.add_argument("assignment")
    feedback_zip.add_argument("--output", type=Path,
                              help="zip to write (default: exports/<assignment>-feedback.zip)")
    feedback_zip.add_argument("--force", action="store_true",
                              help="zip it even while the service's exam mode still hides "
                                   "these results from students (c.AssignmentPolicy)")

    _add_late_parsers(command, anywhere)
    demo = command("demo", help="the instructor's cycle on the shipped examples, in a scratch "
                                "copy of the course (this course's files are left alone)")
    demo.add_argument("--into", type=Path, help="folder for the scratch course (default: a new "
                                                "folder in the system's temporary folder)")
    handout = command("handout", help="handout/<assignment>/: what a student gets (the release "
                                      "notebook and a README)")
    handout.add_argument("assignment")
    command("doctor", help="report which sandbox layers are active on this machine")
    from autograder.service.cli import add_service_parsers

    add_service_parsers(command)
    return parser


def _add_late_parsers(command: Callable[..., argparse.ArgumentParser],
                      anywhere: argparse.ArgumentParser) -> None:
    """`roster` and `extension` (autograder/roster.py, autograder/late.py)."""
    roster = command(
        "roster", help="list the roster (gradebook.db's students), or import one")
    roster_commands = roster.add_subparsers(dest="roster_command", metavar="import")
    roster_import = roster_commands.add_parser(
        "import", parents=[anywhere],
        help="add or update students from nbgrader's student CSV, Canvas's gradebook CSV or "
             "Moodle's grading worksheet")
    roster_import.add_argument("file", type=Path)
    roster_import.add_argument(
        "--update", action="store_true",
        help="rename students who already have a graded submission when the file names them "
             "otherwise (without it such an import is refused: the same id in another LMS's "
             "file can be someone else)")

    extension = command(
        "extension", help="per-student extensions of an assignment's due date")
    actions = extension.add_subparsers(dest="extension_command", required=True,
                                       metavar="add|import|list|remove")
    add = actions.add_parser("add", parents=[anywhere],
                             help="give (or replace) one student's extension")
    add.add_argument("assignment")
    add.add_argument("student")
    length = add.add_mutually_exclusive_group(required=True)
    length.add_argument("--days", type=float, help="days past the due date")
    length.add_argument("--hours", type=float, help="hours past the due date")
    length.add_argument("--until", metavar="DATE",
                        help="a new due date for this student (no zone given: UTC, as "
                             "nbgrader reads --duedate)")
    imported = actions.add_parser(
        "import", parents=[anywhere],
        help="extensions from a CSV: student_id and one of days, hours, until a row")
    imported.add_argument("assignment")
    imported.add_argument("file", type=Path)
    for parser in (add, imported):
        parser.add_argument("--force", action="store_true",
                            help="give the extension to a student neither in the roster nor "
                                 "in submitted/ (without it: refused, as a mistyped id)")
    listed = actions.add_parser("list", parents=[anywhere], help="the extensions of an assignment")
    listed.add_argument("assignment")
    removed = actions.add_parser("remove", parents=[anywhere],
                                 help="take one student's extension back")
    removed.add_argument("assignment")
    removed.add_argument("student")


def _run_late(args: argparse.Namespace, course: Course) -> None:
    from autograder.results import clean_text, one_line

    if args.command == "roster":
        from autograder import roster

        if args.roster_command == "import":
            done = roster.import_roster(course, args.file, update=args.update)
            print(f"imported {len(done.students)} students from {clean_text(args.file, 300)} "
                  f"({done.kind})")
            for item in done.changed:
                print(f"changed {item}")
            for item in done.skipped:
                print(f"skipped {item}")
        students = roster.roster_students(course)
        if args.roster_command is None:
            for student in students:
                print(" | ".join(one_line(value or "", 128)
                                 for value in (student.id, student.last_name,
                                               student.first_name, student.email,
                                               student.lms_user_id)))
        print(f"{len(students)} students in the roster")
        return
    from autograder import late

    note = "applied to gradebook.db and feedback by the next `autograder grade`"
    if args.extension_command == "add":
        extension = late.make_extension(args.student, args.days, args.hours, args.until)
        late.save_extensions(course, args.assignment, [extension], force=args.force)
        print(f"{args.student}: {extension.describe()} on {args.assignment} ({note})")
    elif args.extension_command == "import":
        extensions = late.read_extensions_csv(args.file)
        late.save_extensions(course, args.assignment, extensions, force=args.force)
        print(f"{len(extensions)} extensions on {args.assignment} ({note})")
    elif args.extension_command == "list":
        for extension in late.list_extensions(course, args.assignment):
            print(f"{extension.student_id}: {extension.describe()}")
    elif args.extension_command == "remove":
        found = late.remove_extension(course, args.assignment, args.student)
        print(f"{args.student}: " + (f"extension removed ({note})" if found
                                     else "had no extension"))


def main(argv: list[str] | None = None) -> int:
    _configure_logging()
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a reader that has gone is handled below
        return code
    except KeyboardInterrupt:  # before or after grading: nothing half-done to report
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `autograder roster | head`: the reader has gone, and so do we
        # Python would report the pipe again while flushing stdout at exit: point it at
        # /dev/null (as Python's documentation advises for SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _configure_logging() -> None:
    """Once, here: warnings (a record that was ignored, a result that could not be shown)
    as one plain line each on stderr; what the run reports itself goes to stdout."""
    logging.basicConfig(level=logging.WARNING, format="autograder: %(levelname)s: %(message)s")


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
    from autograder.errors import UserError
    from autograder.interrupts import Interrupted

    try:
        return _run(args)
    except UserError as error:
        return _fail(str(error))
    except Interrupted as interrupted:
        print(interrupted, file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from autograder import commands
    from autograder.course import Course

    if args.command == "doctor":
        return 0 if commands.doctor(sys.stdout) else 1
    from autograder.service.cli import SERVICE_COMMANDS, run_service_command

    if args.command in SERVICE_COMMANDS:  # serve, worker, submit, token, service
        return run_service_command(args)
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
                                 # one student asked for by name is graded again
                                 regrade=args.regrade or (args.student is not None
                                                          and args.source is None),
                                 scheduler=args.scheduler, unsafe=args.unsafe)
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
        filled = commands.export_report(course, args.assignment, args.format, args.output,
                                        template=args.template, missing=args.missing,
                                        feedback_comments=args.feedback_comments,
                                        out=sys.stdout)
        print(f"wrote {filled.path}")
        if filled.matched == 0:  # written, but surely the wrong file: a script should stop
            return 1
    elif args.command == "feedback-zip":
        from autograder.errors import UserError
        from autograder.lms.feedback_zip import write_feedback_zip
        from autograder.service.views import exam_hides_results

        hidden = exam_hides_results(course, args.assignment)
        if hidden and not args.force:  # the LMS would show students what the service hides
            raise UserError(f"{args.assignment} is in exam mode (c.AssignmentPolicy): its "
                            f"results are hidden from students until {hidden}; the feedback "
                            "is zipped from then (--force: now)")
        print(f"wrote {write_feedback_zip(course, args.assignment, args.output, sys.stdout)}")
    elif args.command in ("roster", "extension"):
        _run_late(args, course)
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
