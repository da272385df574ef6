"""What is at a path that should be a file: a folder, a fifo, a device or a socket is named in a one-line
error instead of "not found" (or a read that blocks forever); and whether a path is inside this
checkout's model zoo (`pretrained/`), which runs never write into. Standard library only: the checks
that run before TensorFlow and numpy import it."""

import os
import stat
from typing import Optional, Union

ZOO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
"""The model zoo of this checkout (`pymeta.zoo`): the models behind the results tables."""


def kind_of_mode(mode: int) -> str:
    """"a fifo", "a device", "a socket", "a folder", "a regular file" or "not a regular file" for an
    `os.stat` mode."""
    return "a regular file" if stat.S_ISREG(mode) else "a fifo" if stat.S_ISFIFO(mode) \
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) \
        else "a folder" if stat.S_ISDIR(mode) else "not a regular file"


def special_kind(path: Union[str, os.PathLike]) -> Optional[str]:
    """What `path` is when it exists but is not a regular file (after following links): "a folder", "a fifo",
    "a device", "a socket"; None for a regular file or nothing there."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else kind_of_mode(mode)


def inside_zoo(path: Union[str, os.PathLike]) -> bool:
    """True if `path` (after following links) is inside this checkout's model zoo: `ZOO_DIR`, when it holds
    the zoo's `index.json` (an installed wheel has none)."""
    if not os.path.isfile(os.path.join(ZOO_DIR, "index.json")):
        return False
    zoo = os.path.realpath(ZOO_DIR)
    return os.path.commonpath([zoo, os.path.realpath(path)]) == zoo
