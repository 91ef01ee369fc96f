"""What every benchmark records: the figures, and the machine they were measured on."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["BenchResult", "machine_info", "pin_to_one_core"]


def machine_info() -> dict[str, Any]:
    """CPU model, core count, Python: enough to compare runs across machines."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def pin_to_one_core() -> str:
    """Pin this process to one CPU so that "per core" figures mean it; says what was done."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


@dataclass
class BenchResult:
    """One benchmark's rows (name → figures) plus context; prints as a table, saves as JSON."""

    name: str
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=machine_info)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def print(self, console: Console | None = None) -> None:
        """Render the rows as a rich table."""
        table = Table(title=f"bench {self.name}")
        columns = list(self.rows[0]) if self.rows else []
        for col in columns:
            table.add_column(col, justify="left" if col == columns[0] else "right", overflow="fold")
        for row in self.rows:
            table.add_row(*(_fmt(row[c]) for c in columns))
        out = console or Console()
        out.print(table)
        for note in self.notes:
            out.print(f"  {note}")
        out.print(f"  machine: {self.machine['cpu']}, {self.machine['cores']} cores")

    def save(self, out_dir: Path) -> Path:
        """Write `<out_dir>/<name>.json`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
