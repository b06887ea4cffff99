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

# Set by the pipeline for each proxied request (to None for the gateway's own endpoints); every record made
# while the request is served carries it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        access = getattr(record, "access", None)
        if access is not None:  # an access log line: its fields, beside the message
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        access = getattr(record, "access", None)
        if access is not None:
            text += " " + " ".join(f"{name}={value}" for name, value in access.items()
                                   if name not in ("method", "path", "status"))
        request_id = REQUEST_ID.get()
        return f"{text} [request {request_id}]" if request_id is not None else text


def configure(level: str, log_format: str) -> None:
    """The root logger writes to standard error in `log_format` from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else _TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
