"""JSON logs, one object per line, carrying the request id of the request being served.

``configure(level)`` installs the formatter on the root logger once per process. The request
id lives in a context variable set by the API middleware, so every line logged while serving a
request carries it. Callers never pass tokens or identity numbers to the logger; as a second
line of defence, bearer tokens that end up in a message are masked.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import sys
import traceback
from typing import Any

import orjson

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def mask(text: str) -> str:
    return _JWT.sub("<token>", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = mask("".join(traceback.format_exception(*record.exc_info)))
        return orjson.dumps(entry, default=str).decode()


_configured = False


def configure(level: str = "INFO") -> None:
    global _configured
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    # aiohttp's access log would print the request line, query string (and so ?token=) included.
    logging.getLogger("aiohttp.access").disabled = True
    _configured = True
