"""Output that is colored on a terminal and plain in a pipe.

rich is imported only when stdout is a terminal (or FORCE_COLOR is set):
a CI job piping JSON should not pay its import time."""

from __future__ import annotations

import os
import sys
from typing import TextIO

Segment = tuple[str, str]  # (text, style); style "" = plain


class Console:
    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        if color is None:
            if os.environ.get("NO_COLOR"):
                color = False
            elif os.environ.get("FORCE_COLOR"):
                color = True
            else:
                color = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.color = color
        self._rich = None
        if color:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(file=self.stream, highlight=False, soft_wrap=True,
                                     force_terminal=True)

    @property
    def is_terminal(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self, *segments: Segment | str) -> None:
        parts = [(s, "") if isinstance(s, str) else s for s in segments]
        if self._rich is not None:
            from rich.text import Text

            text = Text()
            for body, style in parts:
                text.append(body, style=style or None)
            self._rich.print(text)
        else:
            self.stream.write("".join(body for body, _ in parts) + "\n")

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def err_console() -> Console:
    return Console(sys.stderr)
