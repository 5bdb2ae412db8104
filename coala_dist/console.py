"""Keeping the console for the progress line: native libraries' start-up chatter is dropped, everything else kept.

Reverb's C++ code logs through its own logger, which no environment variable or Python setting silences, and an
in-process Reverb server prints a dozen INFO lines per run ("Started replay server", "Sampler and server are owned by
the same process ..."). `drop_native_chatter` sends file descriptor 2 (where C++ writes) through a pipe whose reader
forwards every line except those matching `NATIVE_CHATTER`: only these exact, known INFO messages are dropped, so a
native warning or error still reaches the terminal. Python's own `sys.stderr` is pointed at the original descriptor,
so Python output (the one-line errors, warnings, tracebacks) never passes through the pipe.

TensorFlow's C++ logs (the CUDA/cuDNN/TensorRT probes on a CPU machine) obey `TF_CPP_MIN_LOG_LEVEL`, which
`coala_dist.xla_flags.configure` sets (a user's own value is kept).
"""

from __future__ import annotations

import atexit
import io
import os
import re
import sys
import threading
from typing import TextIO

NATIVE_CHATTER = re.compile(
    r"^\[reverb/cc/[^\]]+\]\s+("
    r"Initializing TFRecordCheckpointer|Loading latest checkpoint|Started replay server|Shutting down replay server"
    r"|Sampler and server are owned by the same process"
    r")"
)

_installed = False

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Ray's driver-side lines when an actor process dies: they count task retries ("infinite retries remaining"), not the
# actor's restarts, and blame the machine ("unexpected system error"); the launcher says what happened instead.
RAY_WORKER_DIED = re.compile(
    r"^\(raylet\)\s.*(A worker died or was killed while executing a task"
    r"|Task \S+ failed\. There are (infinite|\d+) retries remaining)"
)


class DroppingLines(io.TextIOBase):
    """A text stream that forwards whole lines to `target`, except those matching `pattern` (ANSI colour codes
    ignored when matching). For Python-level writers such as Ray's log printer, which looks up `sys.stdout` each
    time it prints."""

    def __init__(self, target: TextIO, pattern: re.Pattern[str]):
        self.target, self.pattern = target, pattern
        self._pending = ""
        self.dropped = 0

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if self.pattern.search(ANSI_ESCAPE.sub("", line)):
                self.dropped += 1
            else:
                self.target.write(line + "\n")
        if self._pending.startswith("\r"):  # a redrawn progress line is never one of Ray's
            self.target.write(self._pending)
            self._pending = ""
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:  # for code that writes to the descriptor itself (it is not filtered)
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def close_filter(self) -> None:
        """Forwards what is left of an unfinished line."""
        if self._pending:
            self.target.write(self._pending)
            self._pending = ""
        self.target.flush()


def counted(count: int, noun: str) -> str:
    """`1 seed`, `2 seeds`: a count with its noun in the right number (nouns that take an `s`)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def smoothing_note(window: int, points: int) -> str:
    """What a plot title says about its moving average: the window actually applied (at most the points drawn), or
    nothing when no point averages more than one iteration."""
    applied = min(window, points)
    return f", {applied}-iteration moving average" if applied > 1 else ""


# Curves with this few points are drawn with markers too: a line through one point is invisible.
MARKER_MAX_POINTS = 20


def drop_native_chatter(pattern: re.Pattern[str] = NATIVE_CHATTER) -> None:
    """From now on, lines written to file descriptor 2 that match `pattern` are dropped; the rest are forwarded.

    Call it once, in the main process of a command, before the native library starts (it is a no-op the second
    time). At exit the original descriptor is restored and what is left in the pipe is forwarded.
    """
    global _installed
    if _installed:
        return
    _installed = True
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # Lives as long as the process (it is the new sys.stderr), so no context manager.
    sys.stderr = open(os.dup(terminal), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")  # noqa: SIM115

    def forward() -> None:
        with open(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not pattern.match(line.decode("utf-8", "replace")):
                        os.write(terminal, line + b"\n")
            if pending and not pattern.match(pending.decode("utf-8", "replace")):
                os.write(terminal, pending)

    reader = threading.Thread(target=forward, name="native-stderr-filter", daemon=True)
    reader.start()

    def restore() -> None:
        os.dup2(terminal, 2)  # closes the pipe's last write end: the reader drains it and stops
        reader.join(timeout=2.0)

    atexit.register(restore)
