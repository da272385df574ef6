"""TensorBoard scalars of a run (tf.summary), written by rank 0 only."""


class Summaries:
    """TensorBoard scalars (tf.summary) in <run_dir>/tensorboard; does nothing when disabled."""

    def __init__(self, directory, enabled):
        self.writer = None
        if enabled:
            import tensorflow as tf
            self.tf = tf
            self.writer = tf.summary.create_file_writer(directory)

    def scalars(self, step, values, flush=True):
        """Write `values` ({name: float or None}; None is skipped) at `step`; flush: to disk now."""
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if value is not None:
                    self.tf.summary.scalar(name, value)
        if flush:
            self.writer.flush()
