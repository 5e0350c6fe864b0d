"""Logging set-up: journald-friendly text, or JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import OrderedDict
from typing import IO, Callable, Mapping, Optional, Tuple

# syslog priorities (sd-daemon(3)): "<N>" at the start of a line sets the journal priority, so
# `journalctl -p warning` works for a service that logs to stdout/stderr.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


# ASCII digits only (str.isdigit() also takes '²'), few enough for any device or inode number.
_NUMBER = re.compile(r"[0-9]{1,20}\Z")


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def stream_is_journal(stream: Optional[IO[str]] = None,
                      env: Optional[Mapping[str, str]] = None) -> bool:
    """True when ``stream`` is connected to the journal.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for a service whose output goes to the
    journal; children inherit the variable even when their own stderr goes elsewhere (a shell
    started from a service, a pipe), so the stream's own device and inode must match
    (systemd.exec(5), "$JOURNAL_STREAM")."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not _NUMBER.match(dev) or not _NUMBER.match(ino):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind it (tests, closed)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """``<prio>logger: message`` without a timestamp: journald adds its own."""

    def format(self, record: logging.LogRecord) -> str:
        text = "%s: %s" % (record.name, record.getMessage())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        prefix = "<%d>" % _priority(record.levelno)
        # journald reads a stream line by line: every line of a traceback needs the prefix, or
        # it lands at the default priority (info) and `-p warning` shows only its first line.
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (epoch seconds), time (UTC, ISO 8601), level, logger, msg,
    and exc when there is a traceback. With ``journal=True`` each line starts with the syslog
    priority; journald strips it, so the MESSAGE field is still pure JSON."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        millis = int(record.created * 1000)
        doc = {
            "ts": millis / 1000.0,
            "time": "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)),
                                  millis % 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        line = json.dumps(doc, sort_keys=True)
        return ("<%d>" % _priority(record.levelno) + line) if self.journal else line


def make_formatter(fmt: str, journal: bool) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(journal=journal)
    if journal:
        return JournalFormatter()
    return TextFormatter()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was
    made: whoever swaps ``sys.stderr`` (an embedding program, a test harness capturing output)
    and closes the old one must not leave logging writing into a closed file."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:  # StreamHandler.setStream; the target is fixed
        pass


class RepeatFilter(logging.Filter):
    """The same message from the same logger at the same level passes at most once per
    ``interval`` seconds; the next one to pass after that says how many were dropped
    ("(repeated K times)"). One flood of identical errors (accept() failing 100,000 times a
    second on EMFILE once wrote 145 MB in 70 s) then costs a line a minute. Only WARNING and
    above: repeated debug and info lines are someone asking for them.

    Installed on the handler by :func:`setup_logging`, so every logger of the process, ours and
    the libraries', goes through it. At most ``max_keys`` distinct messages are remembered."""

    def __init__(self, interval: float = 60.0, level: int = logging.WARNING,
                 max_keys: int = 512, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.level = level
        self.max_keys = max_keys
        self._clock = clock
        # key -> [start of the current window, records dropped in it]
        self._seen: "OrderedDict[Tuple[str, int, str], list]" = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as it would
            return True
        key = (record.name, record.levelno, message[:1000])
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        if entry is not None:
            self._seen.move_to_end(key)
            if entry[1]:
                record.msg = "%s (repeated %d times)" % (message, entry[1])
                record.args = None
            entry[0], entry[1] = now, 0
            return True
        self._seen[key] = [now, 0]
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return True

    def flush(self) -> None:
        """Say what was dropped and not yet reported (a flood that stopped): one line per
        message, at its level and through its logger. Called at exit."""
        pending = [(key, entry[1]) for key, entry in self._seen.items() if entry[1]]
        for (name, level, message), count in pending:
            self._seen[(name, level, message)][1] = 0
            logging.getLogger(name).log(level, "%s (repeated %d times)", message, count)


def flush_repeated() -> None:
    """Flush every RepeatFilter on the root logger's handlers (see RepeatFilter.flush)."""
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, RepeatFilter):
                f.flush()


def setup_logging(level: str = "info", fmt: str = "text", stream: Optional[IO[str]] = None,
                  env: Optional[Mapping[str, str]] = None) -> None:
    """Configure the root logger once for the process: text with timestamps on a terminal,
    ``<prio>`` lines without timestamps into the journal, or JSON lines (``fmt="json"``)."""
    handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    journal = stream_is_journal(sys.stderr if stream is None else stream, env)
    handler.setFormatter(make_formatter(fmt, journal))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Library chatter (grpclib logs every dropped connection at INFO) is not an operator's concern.
    for noisy in ("grpclib", "asyncio", "aiohttp.access", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
