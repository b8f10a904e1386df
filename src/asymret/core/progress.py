"""Progress bars (rich) and the package logger; quiet when output is not a terminal."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
log = logging.getLogger("asymret")


def setup_logging(level: int = logging.INFO) -> None:
    if not log.handlers:
        handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[callable]:
    """Yields ``advance(n)``; draws a bar on a terminal, nothing otherwise (CI logs stay readable)."""
    disabled = not console.is_terminal or os.environ.get("ASYMRET_NO_PROGRESS") == "1"
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=True, disable=disabled,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
