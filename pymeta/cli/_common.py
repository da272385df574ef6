"""What both command-line programs do before their work: quiet TensorFlow and send pymeta's log to
the terminal (progress on stdout, `warning: ...` / `error: ...` lines on stderr)."""

import logging
import sys
from typing import Callable, List, TypeVar

from absl import app

from pymeta.config import CliOptions, config_from_flags
from pymeta.runtime import quiet_tensorflow


class _StdoutBelowWarning(logging.Filter):
    def filter(self, record):
        return record.levelno < logging.WARNING


class _LevelPrefix(logging.Formatter):
    def format(self, record):
        return f"{record.levelname.lower()}: {super().format(record)}"


def setup_logging() -> None:
    """pymeta's INFO lines to stdout as they are; WARNING and above to stderr, prefixed by the level."""
    logger = logging.getLogger("pymeta")
    if getattr(logger, "_pymeta_cli", False):
        return
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_StdoutBelowWarning())
    out.setFormatter(logging.Formatter("%(message)s"))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(_LevelPrefix("%(message)s"))
    logger.addHandler(out)
    logger.addHandler(err)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not also through absl's handler
    logger._pymeta_cli = True


def run_program(main: Callable[[List[str]], int], doc: str) -> None:
    """absl's `app.run(main)`, with `doc` as the usage text when the running program has none (a console
    script) and exit code 0 after --help (absl exits with 1)."""
    program = sys.modules.get("__main__")
    if program is not None and not getattr(program, "__doc__", None):
        program.__doc__ = doc
    try:
        app.run(main)
    except SystemExit as e:
        if e.code == 1 and _HELP_FLAGS & set(sys.argv[1:]):
            raise SystemExit(0) from None
        raise


_HELP_FLAGS = {"--help", "-help", "-?", "--helpshort", "--helpfull", "--helpxml"}


def start() -> None:
    """Quiet TensorFlow (as --tf_log_level says) before anything imports it, then set up logging."""
    quiet_tensorflow(config_from_flags(CliOptions).tf_log_level)
    setup_logging()


Checked = TypeVar("Checked")
_ONE_LINE_ERRORS = (ValueError, FileNotFoundError, ImportError)


def checked_then_run(check: Callable[[], Checked], work: Callable[[Checked], None]) -> int:
    """`check()` first (it needs no TensorFlow, so a bad setting or a missing file is reported at once),
    then `start()` and `work(checked)`; a ValueError, FileNotFoundError or ImportError of either is one
    `error:` line and exit code 2, else 0."""
    setup_logging()
    try:
        checked = check()
    except _ONE_LINE_ERRORS as e:
        logging.getLogger("pymeta").error(str(e))
        return 2
    start()
    try:
        work(checked)
    except _ONE_LINE_ERRORS as e:
        logging.getLogger("pymeta").error(str(e))
        return 2
    return 0
