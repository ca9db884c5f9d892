"""The tooling VM's monitoring run as local processes: real Prometheus, Alertmanager,
blackbox_exporter and one node_exporter per machine, started from the rendered files.

Used by the loopback integration tests and ``bench/detect.py``. Only :func:`local_plan`
differs from a cloud VM: every address becomes a free port on 127.0.0.1, every path a
directory of the run, timings shrink. The files written are the three push sets the
tooling VM receives; the programs run with the units' own command lines.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from resinfra.debian_paths import NODE_EXPORTER_BIN
from resinfra.render.monitoring import LOOPBACK, AlertTimings, Endpoint, MonitoringPlan, ScrapeTarget, ToolingLayout
from resinfra.render.tooling_files import config_push, secrets_push, targets_push
from resinfra.render.tooling_units import alertmanager_service, blackbox_service, prometheus_service

NODE_EXPORTER_COLLECTORS = ("cpu", "meminfo", "filesystem", "netdev", "loadavg")
"""Enough for every rule and dashboard; the others only cost CPU on a small CI machine."""
LOCAL_TIMINGS = AlertTimings(
    scrape_interval=1,
    evaluation_interval=1,
    node_down_for=3,
    site_unreachable_for=3,
    tunnel_down_for=3,
    latency_for=3,
    resource_for=3,
    healer_group_wait=0,
    healer_group_interval=1,
    healer_repeat_interval=60,
    notify_group_wait=0,
    notify_group_interval=1,
    notify_repeat_interval=60,
)
"""The production rules' logic at a scale a test can wait for (scrape 1 s, NodeDown after 3 s)."""
HEALER_TOKEN = "local-healer-token-0123456789"
GRAFANA_PASSWORD = "local-grafana-password"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def local_plan(plan: MonitoringPlan, workdir: Path, timings: AlertTimings = LOCAL_TIMINGS) -> tuple[MonitoringPlan, dict[str, int]]:
    """``plan`` moved onto this machine: the one place the loopback run differs from the tooling VM.

    Every node_exporter gets its own free port, every prober is the one local
    blackbox_exporter (each keeps its site's labels), every probe target is 127.0.0.1,
    every path lives under ``workdir``. Returns the plan and each node's exporter port.
    """
    ports = {n.node: free_port() for n in plan.nodes}
    blackbox = Endpoint(LOOPBACK, free_port())
    layout = ToolingLayout(
        grafana=Endpoint(LOOPBACK, free_port()),
        prometheus=Endpoint(LOOPBACK, free_port()),
        alertmanager=Endpoint(LOOPBACK, free_port()),
        blackbox=blackbox,
        healer=Endpoint(LOOPBACK, free_port()),
        config_dir=str(workdir / "etc/prometheus"),
        prometheus_data_dir=str(workdir / "var/prometheus"),
        alertmanager_data_dir=str(workdir / "var/alertmanager"),
        grafana_dir=str(workdir / "etc/grafana"),
        systemd_dir=str(workdir / "etc/systemd/system"),
    )
    moved = dataclasses.replace(
        plan,
        nodes=tuple(dataclasses.replace(n, address=f"{LOOPBACK}:{ports[n.node]}") for n in plan.nodes),
        probers=tuple(dataclasses.replace(p, address=str(blackbox)) for p in plan.probers),
        probe_targets=tuple(dataclasses.replace(t, address=LOOPBACK) for t in plan.probe_targets),
        layout=layout,
        timings=timings,
    )
    return moved, ports


@dataclass
class Delivery:
    """One webhook request Alertmanager made."""

    received: float
    """time.monotonic() when it arrived."""
    payload: dict[str, Any]


def webhook_alert(name: str, status: str, **labels: str) -> Callable[[dict[str, Any]], bool]:
    """Matches an alert as Alertmanager delivered it to the webhook (``WebhookReceiver.wait_for``)."""
    return lambda a: a["labels"].get("alertname") == name and a["status"] == status and all(a["labels"].get(k) == v for k, v in labels.items())


@dataclass
class WebhookReceiver:
    """Stands in for the healer: records every authorised Alertmanager webhook, refuses the rest with 401,
    and serves the healer's metrics (all at zero) so its scrape job and dashboard have their series."""

    endpoint: Endpoint
    token: str
    deliveries: list[Delivery] = field(default_factory=list)
    refused: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        receiver = self

        from prometheus_client import generate_latest

        from resinfra.healer.observe import Metrics

        metrics = Metrics()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = generate_latest(metrics.registry)
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Authorization") != f"Bearer {receiver.token}":
                    with receiver._lock:
                        receiver.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.deliveries.append(Delivery(time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.endpoint.host, self.endpoint.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def alerts(self, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, alert) for every alert delivered after ``since``."""
        with self._lock:
            return [(d.received, a) for d in self.deliveries if d.received >= since for a in d.payload.get("alerts", [])]

    def wait_for(self, match: Callable[[dict[str, Any]], bool], since: float, timeout: float) -> float:
        """Arrival time of the first delivered alert after ``since`` that ``match`` accepts; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for received, alert in self.alerts(since):
                if match(alert):
                    return received
            time.sleep(0.05)
        raise TimeoutError(f"no matching alert within {timeout} s; received: {[a['labels'] for _, a in self.alerts(since)]}")


def node_exporter_argv(*args: str) -> list[str]:
    """node_exporter with ``args`` (its listen address) and only the collectors the rules and dashboards read."""
    return [NODE_EXPORTER_BIN, *args, "--collector.disable-defaults", *(f"--collector.{c}" for c in NODE_EXPORTER_COLLECTORS)]


def write_files(
    plan: MonitoringPlan, notification_url: str | None = None, healer_token: str = HEALER_TOKEN, grafana_password: str = GRAFANA_PASSWORD
) -> list[Path]:
    """Write the tooling VM's three push sets into the plan's (local) layout."""
    written = []
    for push in (secrets_push(plan, healer_token, grafana_password, notification_url), targets_push(plan), config_push(plan)):
        for f in push.files:
            path = Path(f.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f.content if f.content.endswith("\n") else f.content + "\n")
            written.append(path)
    return written


@dataclass
class LocalMonitoring:
    """The running processes; stop everything with :meth:`stop` (by PID, only what this started)."""

    plan: MonitoringPlan
    workdir: Path
    exporter_ports: dict[str, int]
    webhook: WebhookReceiver
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    healer_stand_in: bool = True
    """False when the real healer listens at the layout's healer address (its end-to-end test)."""

    def _start(self, name: str, argv: list[str] | tuple[str, ...]) -> None:
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_node(self, node: str) -> None:
        self._start(f"node-{node}", node_exporter_argv(f"--web.listen-address={LOOPBACK}:{self.exporter_ports[node]}"))

    def kill_node(self, node: str) -> float:
        """Stop a machine's node_exporter; returns time.monotonic() just before the kill."""
        process = self.processes.pop(f"node-{node}")
        killed_at = time.monotonic()
        process.kill()
        process.wait(timeout=10)
        return killed_at

    def start(self) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        for directory in (self.plan.layout.prometheus_data_dir, self.plan.layout.alertmanager_data_dir):
            Path(directory).mkdir(parents=True, exist_ok=True)
        if self.healer_stand_in:
            self.webhook.start()
        for node in self.exporter_ports:
            self.start_node(node)
        layout = self.plan.layout
        for service in (blackbox_service(layout), alertmanager_service(layout), prometheus_service(layout)):
            self._start(service.unit.removesuffix(".service"), service.argv)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()
        if self.healer_stand_in:
            self.webhook.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query against the local Prometheus."""
        url = f"{self.plan.layout.prometheus.url}api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body["status"] != "success":
            raise RuntimeError(f"{expr}: {body}")
        return list(body["data"]["result"])

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except OSError as err:  # not listening yet
                last_error = err
            time.sleep(0.2)
        raise TimeoutError(f"{what} within {timeout} s (last error: {last_error}); logs in {self.workdir / 'logs'}")

    def wait_for_all_targets(self, timeout: float = 60) -> None:
        """Every node scraped and every mesh probe answered."""
        expected = len(self.plan.nodes) + len(self.plan.probe_pairs())

        def healthy() -> bool:
            up = self.query('up{job=~"node|mesh"} == 1')
            probes = self.query('probe_success{job="mesh"} == 1')
            return len(up) == expected and len(probes) == len(self.plan.probe_pairs())

        self.wait_until(healthy, timeout, f"{expected} targets up")


@contextmanager
def running(plan: MonitoringPlan, workdir: Path, timings: AlertTimings = LOCAL_TIMINGS, healer_stand_in: bool = True) -> Iterator[LocalMonitoring]:
    """Render ``plan`` for this machine, start everything, yield it, stop everything (also on failure).

    With ``healer_stand_in`` False nothing listens at the healer's address: the caller runs the real healer there.
    """
    local, ports = local_plan(plan, workdir, timings)
    write_files(local)
    monitoring = LocalMonitoring(local, workdir, ports, WebhookReceiver(local.layout.healer, HEALER_TOKEN), healer_stand_in=healer_stand_in)
    try:
        monitoring.start()
        yield monitoring
    finally:
        monitoring.stop()


def nodes_of(plan: MonitoringPlan, site: str) -> list[ScrapeTarget]:
    return [n for n in plan.nodes if n.site == site]
