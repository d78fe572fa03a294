"""Logging setup shared by every valux process: structlog in front, stdlib underneath.

One call, :func:`configure_logging`, in each process (the API process and the
constructor of every Ray actor — actors do not inherit the driver's logging
setup, DESIGN.md "Ray facts"). Output is one JSON object per line (or a
human-readable console format) carrying:

- ``timestamp`` (ISO 8601, UTC), ``level``, ``logger`` (the logger name), ``event``;
- ``process`` (the role given to :func:`configure_logging`, e.g. ``"api"`` or
  ``"agent-host-3"``) and ``pid``;
- every key bound with ``structlog.contextvars.bind_contextvars`` (agent,
  signal and position ids), so a log line can be joined to its request;
- a rendered ``exception`` when one is logged.

stdlib loggers (aiohttp's access log, asyncpg, Ray's client) go through the
same renderer, so a process writes one format only.

Design notes:

- structlog events are handed to the stdlib logger unrendered
  (``ProcessorFormatter.wrap_for_formatter``); rendering happens in the one
  handler valux installs on the root logger, which a second call replaces —
  calling :func:`configure_logging` twice is safe. Loggers are not cached, so
  one created (or even used) before the call follows it too.
- Levels are filtered first thing (``filter_by_level``): a ``debug`` call at
  level ``info`` costs one ``isEnabledFor`` check.
- Loggers hold a reference to a stdlib logger and must not travel pickled into
  a Ray actor: create them with :func:`get_logger` in the process that logs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from valux.errors import ConfigurationError

__all__ = ["LEVELS", "configure_logging", "get_logger"]

LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_FORMATS: Final = ("json", "console")
_HANDLER_NAME: Final = "valux"

# Read at log time (not captured in closures), so a second configure_logging()
# call updates loggers that were created and cached before it.
_process_name: str | None = None


def _add_process(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    if _process_name is not None:
        event_dict.setdefault("process", _process_name)
    event_dict.setdefault("pid", os.getpid())
    return event_dict


_LEADING_KEYS: Final = ("timestamp", "level", "process", "logger", "event")


def _leading_keys_first(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level, process, logger and event first: easier to read raw lines."""
    ordered = {k: event_dict.pop(k) for k in _LEADING_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


def _shared_processors() -> list[Processor]:
    """Enrichment applied both to structlog events and to stdlib records."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_process,
    ]


def _renderer_chain(fmt: str, stream: TextIO) -> list[Processor]:
    if fmt == "console":
        colors = bool(getattr(stream, "isatty", lambda: False)())
        # ConsoleRenderer renders exc_info itself.
        return [structlog.dev.ConsoleRenderer(colors=colors)]
    return [
        structlog.processors.format_exc_info,
        _leading_keys_first,
        structlog.processors.JSONRenderer(sort_keys=False),
    ]


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    process: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger for this process.

    ``level`` is one of debug|info|warning|error (case-insensitive), ``fmt`` is
    json|console, ``process`` names this process's role in every line, and
    ``stream`` (default ``sys.stderr``) is where lines go. Idempotent: a second
    call replaces the first one's handler instead of adding another.
    """
    global _process_name
    level_no = LEVELS.get(level.lower())
    if level_no is None:
        raise ConfigurationError(
            f"logging.level: {level!r} is not one of {', '.join(LEVELS)} (from configure_logging)"
        )
    fmt = fmt.lower()
    if fmt not in _FORMATS:
        raise ConfigurationError(
            f"logging.format: {fmt!r} is not one of {', '.join(_FORMATS)} (from configure_logging)"
        )
    out = stream if stream is not None else sys.stderr
    _process_name = process

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # Not cached: a logger used before configure_logging() (at import, or in an
        # actor before its constructor ran) must still pick up this configuration.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer_chain(fmt, out),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_no)
    logging.captureWarnings(True)


def get_logger(name: str, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (use ``__name__``), with optional bound values."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial_values)
    return logger
