"""Reading input files without blocking: only regular files are opened (a fifo or device named like an
image would block the reader forever, or never end)."""

import os
import stat

__all__ = ["NotARegularFile", "open_regular", "regular_files"]


class NotARegularFile(OSError):
    """A path that should be a data file is a fifo, device, socket or folder (one-line message)."""


def _refuse(path, mode):
    kind = "a fifo" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
        else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
    return NotARegularFile(f"{path} is {kind}, not a regular file: remove it or move it out of the dataset folder")


def open_regular(path):
    """``open(path, 'rb')`` for a regular file (following links); anything else raises NotARegularFile
    without blocking (the file is opened non-blocking and checked with fstat before it is read)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(path, mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_files(folder, exts):
    """Sorted names of the entries of `folder` whose names end with one of `exts` (lower case), skipping
    sub-folders; an entry so named that is not a regular file raises NotARegularFile."""
    names = []
    for e in os.scandir(folder):
        if not e.name.lower().endswith(exts):
            continue
        if e.is_file():
            names.append(e.name)
        elif not e.is_dir():
            raise _refuse(e.path, os.stat(e.path).st_mode if os.path.exists(e.path) else 0)
    return sorted(names)
