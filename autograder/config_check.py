"""One check for every settings class read from nbgrader_config.py (`c.Autograder`,
`c.Service`, `c.AssignmentPolicy`): traitlets alone ignores a misspelt name with a warning
nobody sees, and answers a bad value with a traceback. Here each setting is checked on its
own, so the error names it, its value, and what it must be."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from traitlets import TraitError
from traitlets.config import Config, Configurable

from autograder.errors import UserError
from autograder.results import clean_text


def check_settings(cls: type[Configurable], given: Iterable[tuple[str, Any]], where: str,
                   config_path: Path | str, error: type[UserError],
                   exclude: Iterable[str] = ()) -> None:
    """Each (name, value) of `given` is a configurable trait of `cls` (but `exclude`) that
    takes that value; else `error`, naming it: "<config_path>: <where><name> is not a
    setting (known: ...)" or "<config_path>: <where><name> = <value>: must be ...". A trait
    tagged `wanted="..."` says what it must be in those words."""
    known = sorted(set(cls.class_trait_names(config=True)) - set(exclude))
    for name, value in given:
        if name not in known:
            raise error(f"{config_path}: {where}{clean_text(name, 100)} is not a setting "
                        f"(known: {', '.join(known)})")
        try:
            cls(config=Config({cls.__name__: {name: value}}))
        except TraitError as problem:
            wanted = cls.class_traits()[name].metadata.get("wanted")
            reason = (f"must be {wanted}" if wanted
                      else (str(problem).splitlines() or ["not usable"])[0])
            raise error(f"{config_path}: {where}{name} = {clean_text(repr(value), 200)}: "
                        f"{clean_text(reason, 300)}") from None


OUR_CLASSES = ("Autograder", "Service", "AssignmentPolicy", "LmsDownload", "CanvasExport",
               "MoodleExport", "LatePolicy", "ScoreSettings")


def check_class_names(config: Config, config_path: Path | str,
                      error: type[UserError]) -> None:
    """A settings class whose name is one letter or two from one of ours (`c.AssigmentPolicy`)
    and no class of nbgrader's is a misspelling: traitlets keeps it without a word, and every
    setting under it is ignored (an exam's results would be shown)."""
    import difflib

    for section in config:
        if section in OUR_CLASSES or not section[:1].isupper():
            continue
        near = difflib.get_close_matches(section, OUR_CLASSES, n=1, cutoff=0.8)
        if near and section not in _nbgrader_classes():
            raise error(f"{config_path}: c.{clean_text(section, 100)} is no settings class: "
                        f"c.{near[0]}? (its settings would be ignored)")


def _nbgrader_classes() -> set[str]:
    """nbgrader's configurable classes (`c.Autograde` is one): asked only for a near name."""
    from nbgrader.apps.nbgraderapp import NbGraderApp

    return {cls.__name__ for cls in NbGraderApp().all_configurable_classes()}
