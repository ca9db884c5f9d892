"""The action's own process group, and the leash that stops it when the healer dies.

Every action (``pulumi up`` through the Automation API, or a local command) runs under a small
leash process that leads a new session, so the action and everything it starts (the Pulumi CLI,
its plugins) form one process group the healer can interrupt as a whole. The leash asks the
kernel for a signal when the healer dies (``prctl(PR_SET_PDEATHSIG)``, man 2 PR_SET_PDEATHSIG):
even after ``kill -9`` of the healer alone, the action is interrupted with SIGINT (Pulumi then
finishes the resource operations in progress and stops), then SIGTERM, then SIGKILL. The group
and its leader's start time are written to the journal, so a restarted healer recognises an
action of its predecessor that still runs and waits for it.

The death signal comes when the *thread* that started the leash ends (man 2 PR_SET_PDEATHSIG:
"the parent thread"), so an action is always started from the thread that waits for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
PARENT_DIED = signal.SIGUSR1

_listener = threading.local()


@contextlib.contextmanager
def on_spawn(callback: Callable[[int, int | None], None]) -> Iterator[None]:
    """Within this block, tell ``callback`` (pgid, leader start time) of every action this thread starts."""
    previous = getattr(_listener, "callback", None)
    _listener.callback = callback
    try:
        yield
    finally:
        _listener.callback = previous


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/PID/stat`` field 22); None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def group_alive(pgid: int, leader_start: int | None = None) -> bool:
    """Whether process group ``pgid`` still has a member (and, when its leader lives, it is the process that started at ``leader_start``)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    ticks = start_ticks(pgid)
    # The leader may be gone while its group lives on; a live leader with another start time is another process.
    return ticks is None or leader_start is None or ticks == leader_start


def stop_group(pgid: int, grace: float, leader_start: int | None = None, reap: Callable[[], object] | None = None) -> None:
    """SIGINT to the group, then SIGTERM after ``grace`` seconds, then SIGKILL after 10 more, until it is gone.

    ``reap`` collects the leader when it is this process's child (a zombie still counts as a member of its group).
    """
    for sig, wait in zip(STOP_SIGNALS, (grace, 10.0, 5.0), strict=True):
        if not group_alive(pgid, leader_start):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        wait_for_group(pgid, wait, leader_start, reap)


def wait_for_group(pgid: int, timeout: float, leader_start: int | None = None, reap: Callable[[], object] | None = None) -> bool:
    """Wait until group ``pgid`` is gone; returns whether it is."""
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            reap()
        if not group_alive(pgid, leader_start):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@dataclass(frozen=True)
class Finished:
    """How a leashed action ended."""

    returncode: int | None
    """None when it was stopped after its timeout."""
    output: str


def run(argv: Sequence[str], env: Mapping[str, str], timeout: float, stop_grace: float, stdin: bytes | None = None) -> Finished:
    """Run ``argv`` on a leash in its own process group; after ``timeout`` seconds stop the group (SIGINT, ``stop_grace``, SIGTERM, SIGKILL)."""
    leash = [sys.executable, "-m", "resinfra.healer.leash", str(os.getpid()), str(stop_grace), "--", *argv]
    process = subprocess.Popen(
        leash,
        env=dict(env),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    callback = getattr(_listener, "callback", None)
    if callback is not None:
        callback(process.pid, start_ticks(process.pid))
    try:
        out, _ = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process.pid, stop_grace, reap=process.poll)
        out, _ = process.communicate()
        return Finished(None, out.decode(errors="replace"))
    finally:
        if process.poll() is None:
            stop_group(process.pid, stop_grace, reap=process.poll)
    return Finished(process.returncode, out.decode(errors="replace"))


# The leash itself: python -m resinfra.healer.leash HEALER_PID STOP_GRACE -- COMMAND...


def _leash(parent: int, stop_grace: float, command: list[str]) -> int:
    orphaned = threading.Event()
    signal.signal(PARENT_DIED, lambda *_: orphaned.set())
    # Signals sent to the whole group reach the action too: the leash itself only waits for it.
    # (A handler, not SIG_IGN: an ignored signal would stay ignored in the action after exec.)
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, PARENT_DIED.value, 0, 0, 0)
    if os.getppid() != parent:  # the healer died before the request took effect
        orphaned.set()
    # The action's output is relayed, not handed the healer's pipe: once the healer is gone, writing there would kill
    # the action (SIGPIPE) in the middle of an update.
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    relay = threading.Thread(target=_relay, args=(child,), daemon=True)
    relay.start()
    stopping: Iterator[tuple[signal.Signals, float]] | None = None
    next_at = 0.0
    while child.poll() is None:
        if orphaned.is_set():
            if stopping is None:
                _say(f"resinfra healer leash: the healer (pid {parent}) is gone: stopping the action\n".encode())
                stopping = iter(zip(STOP_SIGNALS, (stop_grace, 10.0, 5.0), strict=True))
            if time.monotonic() >= next_at:
                step = next(stopping, None)
                if step is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(0, step[0])  # SIGKILL, last, takes the leash too
                    next_at = time.monotonic() + step[1]
        time.sleep(0.05)
    relay.join(5)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def _say(data: bytes) -> None:
    """Pass output on to the healer; nobody may be reading any more."""
    with contextlib.suppress(OSError):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _relay(child: subprocess.Popen[bytes]) -> None:
    assert child.stdout is not None
    fd = child.stdout.fileno()
    for chunk in iter(lambda: os.read(fd, 65536), b""):
        _say(chunk)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m resinfra.healer.leash HEALER_PID STOP_GRACE -- COMMAND...", file=sys.stderr)
        return 2
    return _leash(int(argv[0]), float(argv[1]), argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
