"""Atomic file writes: a file is either its old version or the complete new one, never half-written.

    with atomic_write("saved/model.h5") as tmp:   # a new path in the same folder, same extension
        model.save(tmp)                            # write it any way you like
    # here saved/model.h5 is the new file (fsync'ed, then os.replace'd onto the name)

A write that fails leaves the old file as it was and removes its temporary file; when it fails because
the disk is full (`disk_full`), the OSError raised names the file (`filename`: `path`, not the temporary).
A symbolic link is written through (the file it points to is replaced, the link stays); a device or a
pipe (/dev/null, /dev/stdout) is refused, since renaming onto it would replace it with a plain file.
"""

import contextlib
import errno
import json
import os
import secrets
from typing import Any, Iterator

from pymeta.paths import special_kind


@contextlib.contextmanager
def atomic_write(path: "str | os.PathLike") -> Iterator[str]:
    """Yield a temporary path next to `path` (same extension); when the block ends without an
    exception, flush it to disk and rename it onto `path` (atomic on POSIX and Windows); otherwise
    delete it. The folder is created if needed."""
    path = os.path.realpath(check_not_special(os.fspath(path)))  # through a link: its target
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    tmp = os.path.join(folder, f".{base}.tmp{os.getpid()}_{secrets.token_hex(4)}{ext}")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would (a writer may have used mkstemp's 0600)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if disk_full(e) and getattr(e, "filename", None) != path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from e
        raise
    _fsync_folder(folder)


def check_not_special(path: str) -> str:
    """`path`, if it is a regular file, a folder or nothing yet (after following links); ValueError (one
    line) for a device, a pipe or a socket: an atomic write would replace it instead of writing to it."""
    if special_kind(path) not in (None, "a folder"):  # follows links, /dev/stdout's to a pipe too
        raise ValueError(f"cannot write to {path}: it is a device or a pipe, not a file (pymeta writes a "
                         "complete new file and renames it onto the name): give a file path")
    return path


_FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = tuple(os.strerror(code) for code in _FULL)  # "No space left on device", "Disk quota exceeded"


def disk_full(e: BaseException) -> bool:
    """True if `e`, or an exception it was raised from, says that the disk (or the user's quota) is full:
    an OSError with errno ENOSPC / EDQUOT, or an error of a library that only says so in its message
    (h5py, TensorFlow's file writers)."""
    return any((isinstance(x, OSError) and x.errno in _FULL) or any(text in str(x) for text in _FULL_TEXT)
               for x in exception_chain(e))


def exception_chain(e: "BaseException | None") -> Iterator[BaseException]:
    """`e`, the exception it was raised from or while handling, and so on."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def write_json_atomic(path: "str | os.PathLike", obj: Any) -> str:
    """Write `obj` as indented JSON to `path` atomically; returns the path."""
    with atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    return os.fspath(path)


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); not possible on every platform / file system."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
