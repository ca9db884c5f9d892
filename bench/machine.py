"""What a benchmark ran on: cores, CPU model, load average, whether Python bytecode was cached."""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def bytecode_state() -> str:
    """Whether the provider SDKs' bytecode is compiled in the virtualenv and whether Python may write more.

    The SDKs are large (azure-native alone is ~6,000 files): without compiled bytecode every
    process that imports them compiles them again (``uv sync --compile-bytecode`` pays once).
    """
    site = Path(sysconfig.get_paths()["purelib"])
    sdk = site / "pulumi_azure_native" / "network"
    sources = list(sdk.glob("*.py"))
    compiled = list((sdk / "__pycache__").glob("*.pyc")) if (sdk / "__pycache__").is_dir() else []
    cached = "compiled" if sources and len(compiled) >= len(sources) else f"not compiled ({len(compiled)}/{len(sources)} files in pulumi_azure_native.network)"
    writes = "PYTHONDONTWRITEBYTECODE=1 (nothing new is cached)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "bytecode written as modules are imported"
    return f"SDK bytecode {cached}; {writes}; {project_bytecode_state()}"


def project_bytecode_state() -> str:
    """Whether resinfra's modules and pytest's rewrites of the tests are compiled (``tools/compile-bytecode``)."""
    root = Path(__file__).resolve().parent.parent
    plain = (root / "resinfra" / "__pycache__").is_dir() and any((root / "resinfra" / "__pycache__").glob("stack.*.pyc"))
    rewritten = any((root / "tests" / "unit" / "__pycache__").glob("test_cli.*pytest*.pyc")) if (root / "tests" / "unit" / "__pycache__").is_dir() else False
    return f"project bytecode {'compiled' if plain and rewritten else 'not compiled'} (resinfra {'yes' if plain else 'no'}, tests' rewrites {'yes' if rewritten else 'no'})"


def busy_and_total_ticks() -> tuple[int, int]:
    """The machine's CPU time since boot, busy and in all, in clock ticks (the first line of /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def describe() -> str:
    one, five, fifteen = load_average()
    return (
        f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {sys.version.split()[0]}\n"
        f"load average at start: {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)\n"
        f"{bytecode_state()}"
    )


@dataclass
class LoadSampler:
    """The 1-minute load average sampled every ``interval`` seconds while a benchmark runs."""

    interval: float = 10.0
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ticks_at_start: tuple[int, int] = (0, 0)
    _ticks_at_end: tuple[int, int] = (0, 0)

    def __enter__(self) -> LoadSampler:
        self._ticks_at_start = busy_and_total_ticks()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticks_at_end = busy_and_total_ticks()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append(load_average()[0])
            if self._stop.wait(self.interval):
                return

    def summary(self) -> str:
        if not self.samples:
            return "load during the run: not sampled"
        mean = sum(self.samples) / len(self.samples)
        busy = self._ticks_at_end[0] - self._ticks_at_start[0]
        total = self._ticks_at_end[1] - self._ticks_at_start[1]
        cores = os.cpu_count() or 1
        # Every process on the machine counts, the suite's daemons (charon, Prometheus, ...) included.
        used = f"; CPU busy {busy / os.sysconf('SC_CLK_TCK'):.0f} cpu-s, {cores * busy / total:.2f} of {cores} cores on average" if total else ""
        return f"load during the run (1-min average, every {self.interval:.0f} s): mean {mean:.2f}, max {max(self.samples):.2f}, n={len(self.samples)}{used}"


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
