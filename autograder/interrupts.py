"""Ctrl-C during a grading run: stop at once, but never in the middle of storing a result.

A result is stored in several writes (feedback, gradebook.db, then the stored result that marks
it done); an interrupt that lands between two of them is held until the last one is written,
so a rerun finds each student either done or not started.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(Exception):
    """The run was stopped by the instructor (SIGINT); what was stored is kept."""

    def __init__(self, stored: int, total: int, regrade: bool = False) -> None:
        # With --regrade the same command would grade everything again: without it, the
        # rerun keeps what this run stored.
        again = ("run it again without --regrade to resume" if regrade
                 else "run the same command again to resume")
        super().__init__(f"interrupted: {stored} of {total} graded and stored; {again}")
        self.stored, self.total = stored, total


class StoringGuard:
    """Holds SIGINT while a result is being stored, then raises KeyboardInterrupt. Only
    installed from the main thread, and only over Python's own handler (a caller with a
    handler of its own keeps it)."""

    def __init__(self) -> None:
        self._storing = 0
        self._pending = False

    @contextmanager
    def installed(self) -> Iterator[StoringGuard]:
        ours = (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        if ours:
            signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            if ours:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextmanager
    def storing(self) -> Iterator[None]:
        self._storing += 1
        try:
            yield
        finally:
            self._storing -= 1
            if not self._storing and self._pending:
                self._pending = False
                raise KeyboardInterrupt

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._storing:
            self._pending = True
            return
        raise KeyboardInterrupt
