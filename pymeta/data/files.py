"""Reading input files without blocking: only regular files are opened (a fifo or device named like an
image would block the reader forever, or never end), and an image only up to a bounded size."""

import os
import stat
import warnings
from typing import Any

from pymeta.paths import kind_of_mode

__all__ = ["NotARegularFile", "open_regular", "read_image", "regular_files"]


class NotARegularFile(OSError):
    """A path that should be a data file is a fifo, device, socket or folder (one-line message)."""


def _refuse(path, mode):
    return NotARegularFile(f"{path} is {kind_of_mode(mode)}, not a regular file: remove it or move it out of the "
                           "dataset folder")


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


def read_image(path, mode: str, size: int = 0, resample: Any = None):
    """The image file `path` as a uint8 array in PIL mode `mode` ("L": [h, w]; "RGB": [h, w, 3]), resized to
    size x size (0: as it is) with `resample`. A regular file only (`open_regular`), of at most PIL's
    MAX_IMAGE_PIXELS pixels (89 million): a larger one (a small PNG of zeros can declare 144 million, 432 MB
    decoded) raises PIL's DecompressionBombWarning as an error when it is opened, before it is decoded."""
    import numpy as np
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with open_regular(path) as f, Image.open(f) as im:
            if im.mode != mode:
                im = im.convert(mode)
            if size > 0 and im.size != (size, size):
                im = im.resize((size, size), resample=resample)
            return np.asarray(im, dtype=np.uint8)
