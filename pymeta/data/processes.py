"""Worker processes that cannot hang their parent (the data scripts' decoding, the loading of
`ClassificationTaskFromFiles`), nor outlive it.

    workers = Workers(decode, 2)               # fork them early (before large arrays or open files)
    try:
        for result in workers.map(jobs):       # decode(job) for each job, in the order of `jobs`
            ...
    finally:
        workers.close()                        # kills them: nothing is waited for

Each worker has a pipe of its own: no queue or lock is shared with a process that may be killed. A job
that raises ends `map` with that exception (the workers are killed); a worker that dies without its
result (killed, e.g. by the out-of-memory killer) ends it with `WorkerDied`. `multiprocessing.Pool`,
which this replaces, waits for such a result forever. A parent that dies (even by SIGKILL) closes its
ends of the pipes, and the workers end.
"""

import multiprocessing
import multiprocessing.connection
import signal
import weakref
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, Iterable, Iterator, List, cast


class WorkerDied(RuntimeError):
    """A worker process ended without sending the result of its job."""


def _serve(conn: Any, fn: Callable[[Any], Any], parent_ends: List[Connection]) -> None:
    """A worker's loop: a job in, (True, fn(job)) or (False, the exception it raised) out; until the
    parent goes away (its end of the pipe closed: killed or not, the worker then ends too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for end in parent_ends:  # inherited by the fork: held here, they would keep every pipe open
        end.close()
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        try:
            reply = (True, fn(job))
        except Exception as e:  # noqa: BLE001  (raised again in the parent)
            reply = (False, e)
        try:
            conn.send(reply)
        except Exception as e:  # noqa: BLE001  (a result or an exception that does not pickle)
            conn.send((False, RuntimeError(f"{type(e).__name__}: {e}")))


class Workers:
    """`count` forked processes that run `fn` on jobs sent to them (`map`); `close` kills them."""

    def __init__(self, fn: Callable[[Any], Any], count: int):
        context = multiprocessing.get_context("fork")
        self._processes: Dict[Connection, Any] = {}  # the parent's end of a worker's pipe -> the worker
        for _ in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, fn, [*self._processes, mine]), daemon=True)
            process.start()
            theirs.close()
            self._processes[mine] = process
        # killed also when this object is garbage-collected without `close`
        self._finalizer = weakref.finalize(self, _kill, dict(self._processes))

    def map(self, jobs: Iterable[Any], ahead: int = 2) -> Iterator[Any]:
        """fn(job) for each of `jobs`, in their order, computed by the workers (results wait for the one
        before them: at most `ahead` jobs per worker beyond the next one to be taken). The first
        exception a job raised is raised here, and the workers are killed (also when the caller stops
        taking results while jobs are out: the next `map` would get their results)."""
        if self.closed:
            raise RuntimeError("these workers are closed")
        pending = iter(jobs)
        idle: List[Connection] = list(self._processes)
        busy: Dict[Connection, int] = {}  # pipe -> index of its job
        done: Dict[int, Any] = {}
        sent = taken = 0
        limit = max(1, ahead) * max(1, len(self._processes))
        try:
            while True:
                while idle and sent < taken + limit:
                    job = next(pending, _END)
                    if job is _END:
                        break
                    conn = idle.pop()
                    conn.send(job)
                    busy[conn] = sent
                    sent += 1
                if taken in done:
                    yield done.pop(taken)
                    taken += 1
                    continue
                if not busy:
                    return
                for ready in multiprocessing.connection.wait(list(busy)):
                    conn = cast(Connection, ready)
                    index = busy.pop(conn)
                    try:
                        ok, value = conn.recv()
                    except EOFError:
                        process = self._processes[conn]
                        process.join(5)
                        raise WorkerDied(f"a worker process ended without the result of its job (exit code "
                                         f"{process.exitcode})") from None
                    if not ok:
                        raise cast(BaseException, value)
                    done[index] = value
                    idle.append(conn)
        except GeneratorExit:  # the caller stopped taking results: fine, unless jobs are still out
            if busy:
                self.close()
            raise
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        """After `close`, or after a `map` that ended in an error."""
        return not self._processes

    def close(self) -> None:
        """Kill the workers (idle or not) and wait for them to be gone."""
        self._finalizer()
        self._processes = {}


def _kill(processes: Dict[Connection, Any]) -> None:
    for process in processes.values():
        process.kill()
    for conn, process in processes.items():
        process.join()
        conn.close()


_END = object()
