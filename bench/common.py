"""What the loopback benchmarks share: the dev stack run offline, and how a series of seconds is summarised."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

from resinfra.offline import OfflineRun, run_offline

ROOT = Path(__file__).resolve().parent.parent


def dev_stack() -> OfflineRun:
    """The dev stack (Pulumi.dev.yaml) run under mocks: its monitoring plan and inventory."""
    values: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    return run_offline(values)


def summary(label: str, values: list[float], width: int = 32) -> str:
    return f"{label:{width}s} median {statistics.median(values):6.2f} s   min {min(values):6.2f} s   max {max(values):6.2f} s   (n={len(values)})"
