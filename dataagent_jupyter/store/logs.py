"""The ``dataagent_jupyter`` logger: level from ``DataAgent.log_level``, stderr by default.

Log lines carry timings and counts. They never carry an API key, a question, or a cell
value: notebooks with logs on are shared, and logs are pasted into bug reports.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

from ..errors import ConfigError

LOGGER_NAME = "dataagent_jupyter"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:  # subscriptable at run time only from Python 3.11
    _StreamHandler = logging.StreamHandler


class _StderrHandler(_StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now*.

    ipykernel replaces ``sys.stderr`` so that output lands in the running cell, and tests
    capture it; holding the stream from import time would write to a stale one.
    """

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(level: str | int) -> logging.Logger:
    """Set the level of the ``dataagent_jupyter`` logger; add a stderr handler if needed.

    A handler is added only when neither our logger nor the root logger has one, so an
    application that configured logging itself gets our records once, through its own
    handlers. Calling it again only changes the level.
    """
    if isinstance(level, str):
        name = level.strip().upper()
        if name not in _LEVELS:
            raise ConfigError(
                f"unknown log level {level!r}.",
                hint="Use DEBUG, INFO, WARNING or ERROR: %config DataAgent.log_level = 'INFO'",
            )
        numeric = _LEVELS[name]
    else:
        numeric = int(level)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(numeric)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    return logger
