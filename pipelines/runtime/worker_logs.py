"""Keep the log records of Python steps running inside a Flink worker, next to the Flink log.

In thread mode a Python step runs in an interpreter embedded in the JVM (PEMJA).
Nothing there configures Python logging, so a warning falls through to
``sys.stderr``, which PEMJA forwards to the JVM's stderr: for the local runtime
that is a pipe nobody reads, so the message is lost (and enough of them would
fill the pipe and stall the job). :func:`route_to_flink_log` gives the
``pipelines`` logger a file handler writing to ``$FLINK_LOG_DIR/livefeat-worker-<pid>.log``,
in the directory that holds the Flink log (``create_env`` sets ``FLINK_LOG_DIR``
before the JVM starts, so the workers inherit it).

Plain Python file I/O is used on purpose: Java objects obtained through PEMJA are
bound to the thread that looked them up, and calling an SLF4J logger from another
task thread crashed the JVM in our tests.

In process mode Beam's worker already forwards Python logging to the Flink log,
and a plain interpreter (the client, tests) is left alone: there the function does
nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

ROOT_LOGGER = "pipelines"
"""The logger whose records (and its children's) are kept."""

LOG_DIR_ENV = "FLINK_LOG_DIR"
"""Where the Flink log is; the worker log goes next to it."""

_FORMAT = "%(asctime)s %(levelname)-5s %(name)s - %(message)s"


class WorkerLogHandler(logging.FileHandler):
    """The file handler :func:`route_to_flink_log` installs (a marker type, to install it once)."""


def in_thread_mode_worker() -> bool:
    """True inside a Python interpreter embedded in a Flink JVM (PEMJA)."""
    if "_pemja" in sys.modules:
        return True
    try:  # a module the embedding JVM registers; it has no spec, so find_spec cannot tell
        importlib.import_module("_pemja")
    except ImportError:
        return False
    return True


def worker_log_path(log_dir: str | os.PathLike[str]) -> Path:
    """The file this process's worker log records go to, under ``log_dir``."""
    return Path(log_dir) / f"livefeat-worker-{os.getpid()}.log"


def route_to_flink_log(*, force: bool = False) -> Path | None:
    """Write ``pipelines.*`` records at INFO and above next to the Flink log, once per process.

    Args:
        force: install outside a thread-mode worker too (tests).

    Returns:
        The log file, or None when nothing was installed (not in a thread-mode worker,
        or ``FLINK_LOG_DIR`` unset or not writable).
    """
    logger = logging.getLogger(ROOT_LOGGER)
    for handler in logger.handlers:
        if isinstance(handler, WorkerLogHandler):
            return Path(handler.baseFilename)
    log_dir = os.environ.get(LOG_DIR_ENV)
    if not log_dir or not (force or in_thread_mode_worker()):
        return None
    path = worker_log_path(log_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = WorkerLogHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return path
