"""What a long command shows while it works: a bar on a terminal, a line per step in a
log, nothing under ``--quiet``.

Jobs stay free of printing: a long job (``simulate``, ``main``) takes an optional
``progress`` callback and calls it as ``progress(done, total, label)`` after each step
(a day scored, a step finished); :class:`Progress` is the ``sml`` commands' callback. It
writes to stderr, so stdout keeps only what the command produced (its summary).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

ProgressCallback = Callable[[int, int, str], None]
"""``progress(done, total, label)``: ``done`` of ``total`` steps are finished; ``label``
says what the last one was (``2024-02-07: 10 rows scored``)."""


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (a log file or a pipe is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """A :data:`ProgressCallback` for the ``sml`` commands.

    On a terminal it draws one ``click`` progress bar that it redraws in place; on
    anything else (a log file, a pipe, ``make demo``'s relay) it writes one line per step,
    ``<title>: <done>/<total> <label>``; with ``quiet`` it writes nothing.
    """

    def __init__(self, title: str, total: int, *, quiet: bool = False, stream: TextIO | None = None,
                 bar: bool | None = None) -> None:
        self.title = title
        self.total = max(total, 1)
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.use_bar = is_terminal(self.stream) if bar is None else bar
        self.done = 0
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if not self.quiet and self.use_bar:
            import click

            self._bar = click.progressbar(
                length=self.total, label=self.title, file=self.stream, show_pos=True, show_eta=True,
                item_show_func=lambda label: label, width=24,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __call__(self, done: int, total: int, label: str) -> None:
        if self.quiet:
            return
        if total != self.total and total > 0:
            self.total = total
            if self._bar is not None:
                self._bar.length = total
        step = max(done - self.done, 0)
        self.done = max(done, self.done)
        if self._bar is not None:
            self._show_on_bar(step, label)
            return
        print(f"{self.title}: {done}/{self.total} {label}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line outside the count (a step that started): a line in a log; on a
        terminal, the bar's label until the next step."""
        if self.quiet:
            return
        if self._bar is not None:
            self._show_on_bar(0, text)
            return
        print(f"{self.title}: {text}", file=self.stream, flush=True)

    def _show_on_bar(self, step: int, label: str) -> None:
        if step:
            self._bar.update(step, label)
        else:  # click redraws only when the count moves
            self._bar.current_item = label
            self._bar.render_progress()

    def close(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.__exit__(None, None, None)
