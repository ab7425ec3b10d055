"""Display helpers: the memory bar, verdict colours, byte/time/money formatting, a path suggester.

Pure presentation of numbers the planner computed (a StrategyEstimate's MemoryBreakdown, verdict,
hours and dollars); nothing here estimates anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual.suggester import Suggester

from planner.units import GIB

# Segment order and colours of the memory bar: the four parts the issue asks for, then the rest
# (temporary buffers + CUDA context/allocator overhead) so the bar adds up to MemoryBreakdown.total.
SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("weights", "W", "dodger_blue2"),
    ("gradients", "G", "magenta"),
    ("optimizer", "O", "dark_orange"),
    ("activations", "A", "green3"),
    ("other", "+", "grey58"),
)
VERDICT_STYLE = {"fits": "bold green", "tight": "bold yellow", "exceeds": "bold red", "cpu": "bold cyan"}


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"


def hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.0f} min"
    return f"{h:.1f} h"


def money(usd: float) -> str:
    return f"${usd:,.2f}" if usd < 100 else f"${usd:,.0f}"


def params(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def verdict_text(verdict: str) -> Text:
    return Text(verdict, style=VERDICT_STYLE.get(verdict, "bold"))


def memory_parts(memory) -> list[tuple[str, int]]:
    """(segment name, bytes) of a MemoryBreakdown, in bar order; 'other' makes the sum equal total."""
    four = [(name, int(getattr(memory, name))) for name, _, _ in SEGMENTS[:4]]
    other = max(0, int(memory.total) - sum(b for _, b in four))
    return four + [("other", other)]


def memory_bar(memory, capacity: int, width: int = 40) -> Text:
    """A bar ``width`` cells wide: one coloured run per segment, scaled to the GPU's memory.

    When the total exceeds the capacity the bar is scaled to the total and the cells past the
    capacity are drawn on red, so "does not fit" is visible at a glance.
    """
    parts = memory_parts(memory)
    scale = max(capacity, int(memory.total), 1)
    cap_cell = round(width * capacity / scale) if capacity else width
    cells: list[tuple[str, str]] = []
    acc = 0.0
    for name, nbytes in parts:
        start = round(width * acc / scale)
        acc += nbytes
        end = round(width * acc / scale)
        style = next(s for n, _, s in SEGMENTS if n == name)
        cells.extend(("█", style) for _ in range(end - start))
    cells.extend(("░", "grey35") for _ in range(width - len(cells)))
    bar = Text()
    for i, (char, style) in enumerate(cells[:width]):
        bar.append(char, style=f"{style} on red" if i >= cap_cell and char == "█" else style)
    return bar


def memory_legend() -> Text:
    legend = Text()
    for name, _, style in SEGMENTS:
        legend.append("█", style=style)
        legend.append(f" {name}  ")
    return legend


class PathSuggester(Suggester):
    """Completes the last component of a file path from the file system (like a shell's Tab)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        try:
            path = Path(os.path.expanduser(value))
            folder, stem = (path, "") if value.endswith(os.sep) else (path.parent, path.name)
            names = sorted(p.name + (os.sep if p.is_dir() else "") for p in folder.iterdir())
        except (OSError, ValueError):  # no such folder, no permission, a name the OS rejects
            return None
        for name in names:
            if name.startswith(stem) and name != stem and not name.startswith("."):
                return value + name[len(stem):]
        return None
