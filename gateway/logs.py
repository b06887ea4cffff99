"""Log lines: JSON (the default) or text, with the request id of the request being served.

`server.log_format: json` writes one JSON object per record: `time` (UTC,
ISO 8601 with milliseconds), `level`, `logger`, `message`, `request_id` when
the record was made while a proxied request was served, and `exception`
when it carries one; an access log record adds its fields (see
http/protocol.py). `text` writes the same as one readable line.
"""
from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
import time

# Set by the pipeline for each proxied request (to None for the gateway's own endpoints); every record made
# while the request is served carries it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class _Lines(logging.Formatter):
    """A formatter whose lines can also be made without a LogRecord (`line`), for the access log."""

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         getattr(record, "access", None),
                         self.formatException(record.exc_info) if record.exc_info else None)

    def line(self, created: float, level: str, logger: str, message: str, fields: dict[str, object] | None,
             exception: str | None = None) -> str:
        raise NotImplementedError


class JsonFormatter(_Lines):
    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # a second, and its ISO 8601 time to the seconds: made once
        self._encode = json.JSONEncoder(ensure_ascii=False).encode  # made once: json.dumps makes one a call

    def _time(self, created: float) -> str:
        second = int(created)
        cached, prefix = self._second  # one tuple: a record made on another thread reads a matching pair
        if second != cached:
            prefix = datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, prefix)
        return f"{prefix}.{int((created - second) * 1000):03d}Z"

    def line(self, created: float, level: str, logger: str, message: str, fields: dict[str, object] | None,
             exception: str | None = None) -> str:
        line: dict[str, object] = {"time": self._time(created), "level": level, "logger": logger, "message": message}
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        if fields is not None:  # an access log line: its fields, beside the message
            line.update(fields)
        if exception is not None:
            line["exception"] = exception
        return self._encode(line)


class _TextFormatter(_Lines):
    def line(self, created: float, level: str, logger: str, message: str, fields: dict[str, object] | None,
             exception: str | None = None) -> str:
        # as logging's own asctime: local time, a comma before the milliseconds
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(created))},{int(created % 1 * 1000):03d} " \
               f"{level} {logger}: {message}"
        if fields is not None:
            text += " " + " ".join(f"{name}={value}" for name, value in fields.items()
                                   if name not in ("method", "path", "status"))
        request_id = REQUEST_ID.get()
        if request_id is not None:
            text += f" [request {request_id}]"
        return f"{text}\n{exception}" if exception else text


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def write_line(self, text: str) -> None:
        """What emit() does with a formatted record."""
        self.acquire()
        try:
            self.stream.write(text + self.terminator)
            self.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text}))
        finally:
            self.release()


_handler: _LineHandler | None = None  # made by configure()


class AccessLog:
    """The access log: logger `gateway.access` at INFO. Its lines are written to the handler configure()
    made, in its format, without a LogRecord in between (which cost more than a proxied request: the
    bench measures what is left). Where logging was set up otherwise (tests in one process), they go
    through the logger like any record."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("gateway.access")

    def write(self, message: str, fields: dict[str, object]) -> None:
        handler = _handler
        logger = self._logger
        if handler is None or not logger.propagate or logger.handlers or handler not in logging.root.handlers:
            logger.info("%s", message, extra={"access": fields})
        elif logger.isEnabledFor(logging.INFO):
            formatter = handler.formatter
            assert isinstance(formatter, _Lines)
            handler.write_line(formatter.line(time.time(), "INFO", "gateway.access", message, fields))


def configure(level: str, log_format: str) -> None:
    """The root logger writes to standard error in `log_format` from `level` up.

    A record does not look up its caller's file and line, thread or process (the logging HOWTO's
    "Optimization"): no line shows them, and with the access log on they cost a third of a request."""
    logging._srcfile = None  # documented in the HOWTO
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _handler
    handler = _handler = _LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
