"""A real terminal for the tests: a tmux session of a given size, its
screen read with capture-pane, keys sent with send-keys, and everything
the program wrote to it kept with pipe-pane."""

import os
import subprocess
import time
from pathlib import Path


class Tmux:
    def __init__(self, workdir: Path, width: int = 80, height: int = 24):
        self.name = f"socktrace-test-{os.getpid()}-{time.monotonic_ns()}"
        self.log = workdir / f"{self.name}.pane"
        # a private server: the tests never touch a user's tmux
        self.base = ["tmux", "-L", self.name, "-f", "/dev/null"]
        self.tmux("new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                  "env TERM=xterm-256color sh")
        self.tmux("set-option", "-t", self.name, "history-limit", "100000")
        self.tmux("pipe-pane", "-t", self.name, "-o", f"cat >> {self.log}")

    def tmux(self, *args: str) -> str:
        return subprocess.run(self.base + list(args), check=True, capture_output=True,
                              text=True).stdout

    def run(self, command: str) -> None:
        """Type `command` at the shell; the shell says EXIT=status when it ends."""
        self.tmux("send-keys", "-t", self.name, f"{command}; echo EXIT=$?", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def screen(self) -> list[str]:
        """What the terminal shows now, line by line."""
        return self.tmux("capture-pane", "-p", "-t", self.name).rstrip("\n").split("\n")

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-t", self.name, "-x", str(width), "-y", str(height))

    def wait(self, pred, timeout: float = 30.0, what: str = "") -> list[str]:
        """The screen, once `pred(screen)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if pred(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or 'the screen'} never came; it shows:\n"
                                     + "\n".join(lines))
            time.sleep(0.2)

    def written(self) -> str:
        """Everything written to the terminal so far (pipe-pane's copy)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        subprocess.run(self.base + ["kill-server"], capture_output=True)
        self.log.unlink(missing_ok=True)
