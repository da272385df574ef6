"""Progress of long work counted in items (e.g. the tasks of a meta-test), for a person watching: a
tqdm bar on a terminal; elsewhere (a pipe, a log file, a batch job) a log line after the first update
(which may include compiling), then when another tenth of the work is done or `every_seconds` have
passed since the last line, and at the end. The time left is estimated from the pace since the first
update:

    meta-test: 300/1000 tasks (30%), mean 97.53%, 41 s elapsed, about 1 min 36 s left
"""

import logging
import sys
import time
from typing import Callable, Optional

logger = logging.getLogger(__name__)


class Progress:
    """Count `total` items done with `update(n, mean)`; use as a context manager (`close` at the end).

    enabled=False: silent. terminal=None: a bar when stderr is a terminal, else log lines (INFO, logger
    `pymeta.progress`). `mean_text(mean)` formats the running mean shown beside the count."""

    def __init__(self, total: int, label: str, unit: str = "tasks", enabled: bool = True,
                 terminal: Optional[bool] = None, mean_text: Callable[[float], str] = "mean {:.2f}".format,
                 every_fraction: float = 0.1, every_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.label, self.unit, self.mean_text = int(total), label, unit, mean_text
        self.every_fraction, self.every_seconds, self.clock = every_fraction, every_seconds, clock
        self.done, self.start = 0, clock()
        self._last_logged, self._last_time = 0, self.start
        self._first = None  # (time, items done) at the first update: the pace is measured from there
        terminal = sys.stderr.isatty() if terminal is None else terminal
        self.bar = None
        self.lines = enabled and not terminal
        if enabled and terminal:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit=unit.rstrip("s") or unit, desc=label, dynamic_ncols=True)

    def update(self, n: int, mean: Optional[float] = None) -> None:
        """`n` more items done; `mean`: the running mean of what they measure (None: not shown)."""
        self.done += int(n)
        if not self.lines:
            if self.bar is not None:
                if mean is not None:
                    self.bar.set_postfix_str(self.mean_text(mean), refresh=False)
                self.bar.update(n)
            return
        now = self.clock()
        step = max(1, round(self.every_fraction * self.total))
        first, self._first = self._first is None, self._first or (now, self.done)
        if (first or self.done - self._last_logged >= step or now - self._last_time >= self.every_seconds
                or self.done >= self.total):
            logger.info(self.line(mean, now))
            self._last_logged, self._last_time = self.done, now

    def line(self, mean: Optional[float], now: float) -> str:
        """The progress line at time `now` (with the running `mean`, if given)."""
        elapsed = now - self.start
        parts = [f"{self.label}: {self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%)"]
        if mean is not None:
            parts.append(self.mean_text(mean))
        parts.append(f"{duration(elapsed)} elapsed")
        if self._first is not None and self._first[1] < self.done < self.total:
            pace = (now - self._first[0]) / (self.done - self._first[1])  # seconds per item
            parts.append(f"about {duration(pace * (self.total - self.done))} left")
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def duration(seconds: float) -> str:
    """A duration for a person: '41 s', '1 min 36 s', '2 h 05 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
