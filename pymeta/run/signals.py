"""Stop signals of a run: SIGINT / SIGTERM become a flag the run loop checks between compiled calls
(then a checkpoint is written, `Interrupted`); a second one, or a SIGTERM while compiling, ends the
process at once. Copies of one request arriving together (`timeout` signals the process and then its
process group) count as one."""

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator, Optional

SAME_REQUEST_SECONDS = 1.0  # stop signals this soon after the first are copies of it, not a second request


class Interrupted(Exception):
    """SIGINT / SIGTERM arrived; a checkpoint was written."""

    def __init__(self, signum: int, path: Optional[str]):
        where = f"; checkpoint written to {path}" if path else ""  # MPI: only rank 0 writes it
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}")
        self.signum, self.path = signum, path


class SignalFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between compiled calls (then a checkpoint is
    written). A second signal (more than `SAME_REQUEST_SECONDS` after the first: `timeout` sends its
    signal to the process and again to its process group, and both copies must not end the run at once),
    or a SIGTERM while a function is traced or compiled (`compiling`), ends the process at once (exit
    code 128 + signal); leaving waits out the rest of that second so a late copy cannot kill the exiting
    process. A watcher thread reads the signal numbers Python's C handler writes to a wakeup pipe, so
    this works even while the main thread is stuck in TensorFlow's C++ code, where Python signal
    handlers cannot run."""

    def __init__(self):
        self.signum = None
        self.compiling = False
        self.first_at: Optional[float] = None  # time.monotonic() of the first stop signal
        self._old = {}
        self._wakeup = None

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        try:
            r, w = os.pipe()
            os.set_blocking(w, False)
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except (ValueError, OSError):  # not the main thread, or no pipes: the flag alone
            return self
        self._wakeup = (w, old)
        threading.Thread(target=self._watch, args=(r,), name="pymeta-signals", daemon=True).start()
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum
        self.first_at = self.first_at or time.monotonic()

    def _watch(self, r):
        seen = 0
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                data = b""
            if not data:
                os.close(r)
                return
            now = time.monotonic()
            for signum in data:
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                if seen and self.first_at is not None and now - self.first_at <= SAME_REQUEST_SECONDS:
                    continue  # a copy of the first request
                self.first_at = self.first_at or now
                seen += 1
                if seen >= 2 or (signum == signal.SIGTERM and self.compiling):
                    why = "a second signal" if seen >= 2 else "while compiling"
                    try:
                        sys.stderr.write(f"error: stopped at once by {signal.Signals(signum).name} ({why}); "
                                         "the run resumes from its last checkpoint\n")
                        sys.stderr.flush()
                    finally:
                        os._exit(128 + signum)

    def __exit__(self, *exc):
        if self.first_at is not None:  # copies of the stop request may still be on their way: absorb them
            time.sleep(max(0.0, self.first_at + SAME_REQUEST_SECONDS - time.monotonic()))
        if self._wakeup is not None:
            w, old = self._wakeup
            signal.set_wakeup_fd(old)
            os.close(w)  # the watcher reads end-of-file and ends
        for s, h in self._old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def compiling(stop: "SignalFlag", log: Callable[[str], None], what: str, first: bool) -> Iterator[None]:
    """Log a 'compiling ...' line before a first compiled call; a SIGTERM meanwhile ends the process."""
    if not first:
        yield
        return
    log(f"compiling {what} (first call) ...")
    stop.compiling = True
    start = time.time()
    try:
        yield
    finally:
        stop.compiling = False
    log(f"compiled {what}; first call done in {time.time() - start:.0f} s")
