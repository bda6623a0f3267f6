"""Progress bars on stderr (rich), silenced by `--quiet` and kept off stdout for `--json`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[[int], None]


class Reporter:
    """Hands out progress callbacks for named steps; a quiet reporter draws nothing."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)

    @contextmanager
    def step(self, description: str, total: int) -> Iterator[Advance]:
        if self.quiet:
            yield lambda _n=1: None
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)


QUIET = Reporter(quiet=True)
