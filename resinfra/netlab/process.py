"""Running commands and daemons for the lab's namespaces: a command that must succeed, a condition waited for, a
daemon ended by its own PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class LabError(RuntimeError):
    """A lab command failed or a condition was not reached in time."""


def run(*command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``condition`` until true; returns the seconds it took. Raises LabError on timeout."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise LabError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Daemon:
    """A charon or a bird this lab started, and its log."""

    process: subprocess.Popen[bytes]
    log: Path


def kill_daemon(daemon: Daemon) -> None:
    """SIGKILL, as a crash would: this lab's own process only."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait(timeout=10)


def stop_daemon(daemon: Daemon) -> None:
    """SIGTERM, then SIGKILL after 5 s: this lab's own process only."""
    with contextlib.suppress(ProcessLookupError):
        daemon.process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        daemon.process.wait(timeout=5)
    if daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait(timeout=5)
