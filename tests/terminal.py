"""A program on a pseudo-terminal, typed at as a person would: for the CLI's interactive paths.

`Terminal(argv, env)` starts `argv` with a new pty as its stdin, stdout and stderr and as its
controlling terminal (so Ctrl-C is a real SIGINT from the line discipline, and `isatty()` is
true), with the standard library only (`os.openpty`; no pexpect). `send(data)` types bytes (an
arrow key is its escape sequence, `UP`, `LEFT`...), `expect(text)` waits until the screen output
so far contains `text` and returns it, `wait()` waits for the exit status. Everything the
program wrote is in `output` (bytes, escape sequences included), for failure messages.

The child gets its terminal through a tiny Python wrapper that makes the pty its controlling
terminal (`TIOCSCTTY` in a new session) and then `exec`s the program: no `preexec_fn`, which is
unsafe in a process that runs server threads, as the tests do.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from typing import IO

UP = b"\x1b[A"
DOWN = b"\x1b[B"
RIGHT = b"\x1b[C"
LEFT = b"\x1b[D"
CTRL_A = b"\x01"
CTRL_C = b"\x03"
CTRL_D = b"\x04"
ENTER = b"\r"

_WRAPPER = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
            "os.execvp(sys.argv[1], sys.argv[1:])")


class Terminal:
    def __init__(self, argv: Sequence[str], env: dict[str, str], *, cwd: str | None = None,
                 rows: int = 40, cols: int = 200, stdout: IO[bytes] | None = None) -> None:
        """`stdout`: a file to redirect the program's stdout to (stdin and stderr stay on the
        terminal), as `memproxy ... > file` at a shell."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.master = master
        self.output = b""
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WRAPPER, *argv], stdin=slave,
                stdout=slave if stdout is None else stdout,
                stderr=slave, env=env, cwd=cwd, start_new_session=True, close_fds=True)
        finally:
            os.close(slave)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the program closed its terminal
            data = b""
        self.output += data
        return bool(data)

    def send(self, data: bytes | str) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def expect(self, text: bytes | str, timeout: float = 30.0, *, after: int = 0) -> int:
        """Wait until `text` is in the output past offset `after`; return where it ends."""
        needle = text.encode() if isinstance(text, str) else text
        deadline = time.monotonic() + timeout
        while True:
            found = self.output.find(needle, after)
            if found >= 0:
                return found + len(needle)
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.5)) and self.proc.poll() is not None
                             and not self._read(0)):
                raise AssertionError(f"{needle!r} not seen; output so far: {self.output!r}")

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status, reading the rest of the output meanwhile."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while self._read(0.05):
            pass
        if self.proc.poll() is None:
            raise AssertionError(f"still running after {timeout} s; output: {self.output!r}")
        return self.proc.returncode

    def settings(self) -> list:
        """The terminal's current termios settings (as a program would find them)."""
        return termios.tcgetattr(self.master)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
