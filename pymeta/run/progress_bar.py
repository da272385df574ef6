"""The run's progress bar (tqdm, on stderr), with pymeta's log lines written above it."""

import contextlib
import io
import logging
from typing import Any, Iterator, TextIO


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, initial: int) -> Iterator[Any]:
    """A tqdm bar on stderr (when `enabled`); meanwhile the log lines of pymeta's console handlers
    are written above it (through `tqdm.write`), keeping their streams, levels and prefixes."""
    from tqdm import tqdm
    bar = tqdm(total=total, initial=initial, disable=not enabled, unit="it", dynamic_ncols=True,
               mininterval=1.0)
    handlers = [h for name in ("pymeta", "") for h in logging.getLogger(name).handlers
                if type(h) is logging.StreamHandler] if enabled else []
    streams = [h.stream for h in handlers]
    try:
        for h in handlers:
            h.setStream(_AboveTheBar(h.stream))
        with bar:
            yield bar
    finally:
        for h, s in zip(handlers, streams):
            h.setStream(s)


class _AboveTheBar(io.TextIOBase):
    """A text stream whose writes go through `tqdm.write` (the bar is cleared, then redrawn below)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        from tqdm import tqdm
        tqdm.write(text, file=self.stream, end="")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
