"""Benchmark: this tree against an earlier commit, on the same submissions, in one run.

    .venv/bin/python bench/bench_before_after.py [--n 200] [--repeats 2] [--before 6f1df31]

Checks out `--before` with `git worktree add` into a temporary folder and grades the same N
submissions (the mix of bench_grading.py) with it and with this tree, interleaved (before,
after, before, after, ...), each run in a fresh copy of the course (its course files from its
own tree), all with this venv's packages and Python. Prints the seconds of each run, the mean
of each side and the ratio after/before, and any student whose score differs between runs.
Everything it makes (the worktree, a throw-away venv, the courses) is removed at the end.

Running the earlier tree: the grader starts its warm server with `python -I -m ...`, which
ignores PYTHONPATH, and this venv's editable install points `autograder` at this tree. So the
earlier tree runs from a throw-away venv whose site-packages hold hard links to this venv's
packages (same files: same page cache, same Landlock rules -- the sandbox lets jobs read
sys.prefix, so the packages must live under it) minus the editable install, plus a .pth
naming the earlier tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path

from bench_grading import KINDS, REPO, make_course, our_results, run

sys.path.insert(0, str(REPO))
from autograder.tempfiles import make_temp_dir, remove_tree  # noqa: E402

SITE = Path(sysconfig.get_paths()["purelib"])
EDITABLE = ("__editable__", "autograder-")  # this venv's link to this tree


def old_tree(folder: Path, commit: str) -> Path:
    tree = folder / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree),
                    commit], check=True)
    return tree


def venv_for(tree: Path, folder: Path) -> Path:
    """A venv running `tree` with this venv's packages; returns its python."""
    venv = folder / "venv-before"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / SITE.relative_to(sys.prefix)
    for entry in SITE.iterdir():
        if entry.name.startswith(EDITABLE) or entry.name == "__pycache__":
            continue
        # Hard links: a copy of 1.4 GB in a second (same file system as /tmp, checked below).
        subprocess.run(["cp", "-al", str(entry), str(site / entry.name)], check=True)
    (site / "before-tree.pth").write_text(f"{tree}\n")
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-I", "-c",
                            "import autograder; print(autograder.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if not probe.startswith(str(tree)):
        raise SystemExit(f"the earlier tree's venv imports autograder from {probe}")
    return python


def scores(root: Path) -> dict[str, float]:
    """Each student's score; a run whose sandbox was not whole is no comparison: stop."""
    results = our_results(root)
    weak = {layer for r in results for layer in r.get("sandbox_off", [])}
    if weak:
        raise SystemExit(f"{root.name}: sandbox layers off: {sorted(weak)}")
    return {r["student_id"]: sum(t["points"] for t in r["tests"]) for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="submissions (default 200)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (default 2)")
    parser.add_argument("--before", default="6f1df31", help="the earlier commit")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    folder = make_temp_dir("bench")
    tree = None
    try:
        if os.stat(folder).st_dev != os.stat(SITE).st_dev:
            raise SystemExit(f"{folder} and {SITE} are on different file systems: no hard links")
        tree = old_tree(folder, args.before)
        sides = {"before": ([str(venv_for(tree, folder)), "-m", "autograder.cli"], tree),
                 "after": ([sys.executable, "-m", "autograder.cli"], REPO)}
        pristine = {}
        for side, (autograder, course_files) in sides.items():
            pristine[side] = folder / f"course-{side}"
            pristine[side].mkdir()
            make_course(pristine[side], args.n, course_files, autograder)
        print(f"grading {args.n} submissions ({', '.join(KINDS)}) on {os.cpu_count()} cores, "
              f"{args.workers} workers: {args.before} (before) and this tree (after), "
              f"interleaved, {args.repeats} runs each", flush=True)
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        results: dict[str, dict[str, float]] = {}
        for repeat in range(args.repeats):
            for side, (autograder, _) in sides.items():
                course = folder / f"run-{side}-{repeat}"
                shutil.copytree(pristine[side], course)
                timed = run([*autograder, "--course", str(course), "grade", "backprop",
                             "--workers", str(args.workers)], cwd=course)
                seconds[side].append(timed.seconds)
                results[f"{side} #{repeat + 1}"] = scores(course)
                print(f"{side:6} run {repeat + 1}: {timed.seconds:7.1f} s  "
                      f"({args.n / timed.seconds:.2f} submissions/s)", flush=True)
                remove_tree(course)

        reference_name, reference = next(iter(results.items()))
        differences = []
        for name, got in results.items():
            for student in sorted(set(reference) | set(got)):
                if got.get(student) != reference.get(student):
                    differences.append(f"  {student}: {reference_name} {reference.get(student)}"
                                       f", {name} {got.get(student)}")
        before, after = (statistics.mean(seconds[side]) for side in ("before", "after"))
        print()
        print(f"submissions            {args.n} (graded: {len(reference)})")
        print(f"scores identical       {'yes' if not differences else 'NO:'}")
        for line in differences:
            print(line)
        print(f"before ({args.before})    mean {before:7.1f} s  "
              f"({', '.join(f'{s:.1f}' for s in seconds['before'])})")
        print(f"after (this tree)      mean {after:7.1f} s  "
              f"({', '.join(f'{s:.1f}' for s in seconds['after'])})")
        print(f"after / before         {after / before:7.3f}")
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)
        for problem in remove_tree(folder):
            print(f"could not remove: {problem}", file=sys.stderr)


if __name__ == "__main__":
    main()
