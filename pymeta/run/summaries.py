"""TensorBoard scalars of a run (tf.summary), written by rank 0 only."""

import contextlib
import errno
import os
from typing import Mapping, Optional

from pymeta.atomic import disk_full


class Summaries:
    """TensorBoard scalars (tf.summary) in <run_dir>/tensorboard; does nothing when disabled."""

    def __init__(self, directory: str, enabled: bool):
        self.writer, self.directory = None, directory
        if enabled:
            import tensorflow as tf
            self.tf = tf
            with self._naming_the_folder():
                self.writer = tf.summary.create_file_writer(directory)

    def scalars(self, step: int, values: Mapping[str, Optional[float]], flush: bool = True) -> None:
        """Write `values` ({name: float or None}; None is skipped) at `step`; flush: to disk now."""
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if value is not None:
                    self.tf.summary.scalar(name, value)
        if flush:
            with self._naming_the_folder():
                self.writer.flush()

    @contextlib.contextmanager
    def _naming_the_folder(self):
        """TensorFlow says that the disk is full only in its message: an OSError naming the folder."""
        try:
            yield
        except Exception as e:
            if disk_full(e):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.directory) from e
            raise
