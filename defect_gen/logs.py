"""Progress output that suits where it goes.

On a terminal, tqdm bars redraw one line in place. Redirected to a file (a cluster job's
log, `... 2> run.log`), those redraws pile up as thousands of carriage-return fragments, so
there the same calls print a plain line now and then instead: when another tenth is done,
at most every `PLAIN_EVERY_S` seconds otherwise, and at the end. `warn` prints a one-line
note to stderr once per launch.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from defect_gen import distributed

PLAIN_EVERY_S = 30.0


def warn(line: str) -> None:
    """A note or warning for the user on stderr, printed by the main rank only (under torchrun
    every rank reaches the same line: one copy, not one per rank)."""
    if distributed.info().is_main:
        print(line, file=sys.stderr)


def live() -> bool:
    """Whether stderr is a terminal, where a redrawn bar is readable."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s: short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainBar:
    """The subset of tqdm's interface the commands use, printing plain lines to stderr."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it"):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.postfix = ""
        self.start = self.last_time = time.perf_counter()
        self.last_tenth = self._tenth()
        self.printed = initial

    def _tenth(self) -> int:
        return (10 * self.n) // self.total if self.total else 0

    def _line(self) -> None:
        elapsed = time.perf_counter() - self.start
        pct = f" ({self.n / self.total:.0%})" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}{extra}, {duration(elapsed)}", file=sys.stderr,
              flush=True)
        self.last_time, self.last_tenth, self.printed = time.perf_counter(), self._tenth(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tenth() > self.last_tenth or time.perf_counter() - self.last_time >= PLAIN_EVERY_S:
            self._line()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if self.n != self.printed:
            self._line()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(PlainBar):
    def _line(self) -> None:
        pass


def bar(total: int, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True):
    """A tqdm bar on a terminal, plain lines elsewhere, nothing when not `enabled`."""
    if not enabled:
        return _Silent(total, initial, desc, unit)
    if live():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit)
    return PlainBar(total, initial, desc, unit)


def iterate(items, desc: str, unit: str = "it", enabled: bool = True):
    """`for x in iterate(items, ...)`: a transient tqdm bar on a terminal, plain lines elsewhere."""
    items = list(items)
    if not enabled or live():
        yield from tqdm(items, desc=desc, unit=unit, disable=not enabled, leave=False)
        return
    with PlainBar(len(items), desc=desc, unit=unit) as plain:
        for item in items:
            yield item
            plain.update(1)
