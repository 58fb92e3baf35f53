"""Progress for long loops: a tqdm bar in a terminal, steady log lines inside a pipeline.

A lab function takes an optional `log` callable (a Dagster asset passes `context.log.info`).
With one, progress goes to it at most every `every_s` seconds (and once at the end) as
"<desc>: 40/84 (48%), 0.91/s, elapsed 44 s, ETA 48 s"; without one, a tqdm bar is shown on
stderr, so the same loop reads well from a script or a notebook.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LogFn = Callable[[str], None]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts units of work; call `update(n)` as they finish. Use as a context manager."""

    def __init__(self, total: int | None, desc: str, log: LogFn | None = None,
                 every_s: float = 15.0, unit: str = "it") -> None:
        self.total, self.desc, self.log, self.every_s, self.unit = total, desc, log, every_s, unit
        self.done = 0
        self.started = self._last = time.perf_counter()
        self._bar = None if log else tqdm(total=total, desc=desc, unit=unit, leave=False)

    def message(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: {self.done}"
        if self.total:
            head += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
        text = f"{head}, {rate:.3g} {self.unit}/s, elapsed {_duration(elapsed)}"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self.log(self.message())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self.log(self.message())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], desc: str, log: LogFn | None = None, total: int | None = None,
          every_s: float = 15.0, unit: str = "it") -> Iterator[T]:
    """Yield from `items`, reporting progress as each one is consumed."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, log, every_s, unit) as progress:
        for item in items:
            yield item
            progress.update()
