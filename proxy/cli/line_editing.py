"""Line editing and history for `memproxy chat` at a terminal, with the standard `readline`.

Without it `input()` reads the raw bytes a terminal sends, so an arrow key reached the model as
`^[[A`. With it the arrow keys move in the line and through earlier lines, Ctrl-R searches them,
and the lines survive the session in a history file.

- Used only when stdin and stdout are both terminals: piped input is read as it is, and nothing
  of readline's (prompt, escape sequences) reaches a pipe or a file.
- Where the module does not exist (a Python built without it) the chat works as before, keys
  unedited; a history file that cannot be read or written is named once on stderr, never fatal.
- The history file: `--history FILE`, else `$MEMPROXY_CHAT_HISTORY`, else
  `$XDG_DATA_HOME/memproxy/chat_history` (`~/.local/share/...`); `--no-history`, or an empty
  `$MEMPROXY_CHAT_HISTORY`, keeps none. Chats are private, so it is created readable by its
  owner only (0600). Each line is appended as it is entered, so a killed session or two at once
  lose nothing; the file is cut to the last `HISTORY_LENGTH` lines when a session starts. A
  line that starts with a space is not remembered (as `HISTCONTROL=ignorespace` in bash).
- readline puts the terminal in its own mode while it reads. A session ended by Ctrl-C stops
  while a line is being read, so the terminal's settings are saved at the start and restored
  at the end.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import ModuleType

HISTORY_ENV = "MEMPROXY_CHAT_HISTORY"
HISTORY_LENGTH = 1000


def default_history_path() -> Path:
    """`$XDG_DATA_HOME/memproxy/chat_history`, `~/.local/share/memproxy/chat_history` without."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                           ".local", "share")
    return Path(base) / "memproxy" / "chat_history"


def history_path(option: str | None, disabled: bool) -> Path | None:
    """The history file to use, or None for none (see the module doc for the order)."""
    if disabled:
        return None
    if option is not None:
        return Path(option).expanduser() if option else None
    configured = os.environ.get(HISTORY_ENV)
    if configured is not None:
        return Path(configured).expanduser() if configured.strip() else None
    return default_history_path()


def _readline() -> ModuleType | None:
    try:
        import readline
    except ImportError:
        return None
    return readline


class LineEditor:
    """readline set up for one chat session; `close()` saves nothing more and restores the
    terminal. Build it with `start()`, which returns None when line editing does not apply."""

    def __init__(self, readline: ModuleType, path: Path | None) -> None:
        self.readline = readline
        self.path = path
        self._terminal = _terminal_state()
        self._warned = False
        readline.set_auto_history(False)  # added by `remember`, which skips some lines
        readline.set_history_length(HISTORY_LENGTH)
        if path is not None:
            self._load(path)

    @classmethod
    def start(cls, path: Path | None) -> LineEditor | None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return None
        readline = _readline()
        if readline is None:
            return None
        return cls(readline, path)

    def _warn(self, action: str, exc: OSError) -> None:
        if not self._warned:
            print(f"memproxy: warning: cannot {action} the chat history {self.path}: "
                  f"{exc.strerror or exc}; lines are not kept", file=sys.stderr)
        self._warned = True
        self.path = None

    def _load(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            self.readline.read_history_file(str(path))
            if self.readline.get_current_history_length() > HISTORY_LENGTH:
                self.readline.write_history_file(str(path))  # cut to the newest lines
        except OSError as exc:
            self._warn("read", exc)

    def remember(self, line: str) -> None:
        """Add an entered line to the history (and its file), unless it is blank, starts
        with a space, or repeats the line before it."""
        if not line.strip() or line.startswith(" "):
            return
        length = self.readline.get_current_history_length()
        if length and self.readline.get_history_item(length) == line:
            return
        self.readline.add_history(line)
        if self.path is not None:
            try:
                if hasattr(self.readline, "append_history_file"):
                    self.readline.append_history_file(1, str(self.path))
                else:  # a readline without it (some libedit builds): the whole list
                    self.readline.write_history_file(str(self.path))
            except OSError as exc:
                self._warn("write", exc)

    def close(self) -> None:
        """Give the terminal back as it was before the session (also after Ctrl-C)."""
        if self._terminal is not None:
            import termios

            fd, attributes = self._terminal
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, attributes)
            self._terminal = None


def _terminal_state() -> tuple[int, list] | None:
    try:
        import termios
    except ImportError:
        return None
    try:
        fd = sys.stdin.fileno()
        return fd, termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):
        return None
