"""``resinfra heal`` as a real process on loopback (settings file, inventory file, a local action), for the fault tests."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.healer.helpers import inventory

TOKEN = "process-test-token-0123456789"


def write_settings(tmp_path: Path, notification_url: str | None = None, settle: float = 0.5, **extra: Any) -> Path:
    """The settings file (and token, inventory) of a healer that repairs at once: no grace, a short cooldown and settle window."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    policy = {"startupGraceSeconds": 0, "cooldownSeconds": 60, "maxBackoffSeconds": 60, "maxUnhealthy": "100%", "maxUnhealthyPerSite": "100%"}
    settings: dict[str, Any] = {
        "listenHost": "127.0.0.1",
        "listenPort": 0,
        "tokenFile": str(token),
        "journal": str(tmp_path / "journal.sqlite"),
        "auditLog": str(tmp_path / "audit.jsonl"),
        "policy": policy,
        "tickSeconds": 0.5,
        "settleSeconds": settle,
        **extra,
    }
    if notification_url is not None:
        (tmp_path / "notification-url").write_text(notification_url)
        settings["notificationUrlFile"] = str(tmp_path / "notification-url")
    path = tmp_path / "healer.json"
    path.write_text(json.dumps(settings))
    inv = [
        {"name": m.name, "site": m.site, "provider": m.provider, "role": m.role.value, "urn": m.urn, "privateIp": "10.0.0.1", "publicIp": ""}
        for m in inventory()
    ]
    (tmp_path / "inventory.json").write_text(json.dumps(inv))
    return path


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


class Service:
    """``resinfra heal`` with a local action, in a session of its own.

    + action: the shell command run as the action (``$RESINFRA_MACHINE`` is the machine)
    + nofile: the process's file descriptor limit (as the unit's LimitNOFILE would set it)
    """

    def __init__(self, tmp_path: Path, action: str, nofile: int | None = None, expect_start: bool = True):
        self.tmp = tmp_path
        self.log = tmp_path / "healer.log"
        argv = [sys.executable, "-m", "resinfra.cli", "heal", "--settings", str(tmp_path / "healer.json"), "--inventory", str(tmp_path / "inventory.json")]

        def limits() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.process = subprocess.Popen(
            [*argv, "--action-command", action],
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            start_new_session=True,
            text=True,
            preexec_fn=limits if nofile is not None else None,
        )
        self.port = 0
        if expect_start:
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
            assert "listening on" in line, f"healer did not start: {self.log.read_text()}"
            self.port = int(line.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    def post(self, body: dict[str, Any], timeout: float = 10) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/alerts", data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {TOKEN}"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)

    def get(self, path: str, timeout: float = 10) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of ``/metrics`` (None when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None

    def status(self, key: str) -> int:
        """A line of /proc/PID/status (``Threads``, ``VmRSS`` in kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def kill(self) -> None:
        """SIGKILL to the healer process alone (not its action, which runs in a group of its own)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    def end(self) -> None:
        """At the end of a test: the healer and whatever is left in its session."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
