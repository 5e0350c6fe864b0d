"""Logging set-up: journald-friendly text, or JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

# syslog priorities (sd-daemon(3)): "<N>" at the start of a line sets the journal priority, so
# `journalctl -p warning` works for a service that logs to stdout/stderr.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """``<prio>logger: message`` without a timestamp: journald adds its own."""

    def format(self, record: logging.LogRecord) -> str:
        text = "%s: %s" % (record.name, record.getMessage())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        prefix = "<%d>" % _priority(record.levelno)
        return "\n".join(prefix + line for line in text.splitlines())


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=True)


def setup_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Library chatter (grpclib logs every dropped connection at INFO) is not an operator's concern.
    for noisy in ("grpclib", "asyncio", "aiohttp.access", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
