"""Looking at a running lab: Prometheus and Alertmanager through the host ports, the tunnels, the scrape targets,
pings between machines and the healer's audit log."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resinfra.lab.state import LabState
from resinfra.netlab import Lab, LabError, run, wait_for

# -- Prometheus and Alertmanager, through the host ports -----------------------------


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    body = http_json(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if body.get("status") != "success":
        raise LabError(f"{expr}: {body}")
    return list(body["data"]["result"])


def scrape_targets(port: int) -> list[dict[str, Any]]:
    return list(http_json(f"http://127.0.0.1:{port}/api/v1/targets?state=active")["data"]["activeTargets"])


def firing_alerts(port: int) -> list[dict[str, Any]]:
    """Alerts Alertmanager holds as active (what the healer is told about)."""
    return [a for a in http_json(f"http://127.0.0.1:{port}/api/v2/alerts?active=true&silenced=false&inhibited=false") if a["status"]["state"] == "active"]


# -- health ---------------------------------------------------------------------


def tunnels_up(lab: Lab) -> bool:
    return lab.tunnels_up()


def tunnel_report(lab: Lab) -> dict[str, dict[str, bool]]:
    """Per charon (a strongSwan gateway, a cloud's tunnel), each of its connections and whether every child SA of it is
    installed. A cloud's tunnels the program does not expect up (Azure's instances try every connection) are left out."""
    report = {}
    for key in lab.charon_keys(expected_only=True):
        try:
            loaded, established = lab.loaded(key), lab.all_children_up(key)
        except LabError:
            report[key] = {}
            continue
        report[key] = {conn: conn in established for conn in sorted(loaded)}
    return report


def tunnel_sites(lab: Lab) -> dict[str, str]:
    """The site of each charon's namespace key (as :func:`tunnel_report` keys them)."""
    return {key: lab.site_of(key) for key in lab.charon_keys()}


def targets_healthy(state: LabState) -> bool:
    """Every node and mesh target scraped, every probe answered, and Prometheus, Alertmanager and the healer scraped."""
    try:
        targets = scrape_targets(state.ui["prometheus"])
    except OSError:
        return False
    scraped = [t for t in targets if t["labels"]["job"] in ("node", "mesh")]
    if len(scraped) != state.expected_targets or any(t["health"] != "up" for t in targets):
        return False
    failing = prometheus_query(state.ui["prometheus"], 'probe_success{job="mesh"} == 0')
    return not failing


def ping(state: LabState, source: str, target: str, timeout: float = 1.0) -> bool:
    """Whether machine ``source`` gets an answer from machine ``target``'s private address."""
    src, dst = state.machine(source), state.machine(target)
    deadline = str(max(1, int(timeout + 0.999)))
    result = run(
        "ip", "netns", "exec", src.namespace, "ping", "-c", "1", "-W", str(timeout), "-w", deadline, "-q", dst.private_ip, check=False, timeout=timeout + 5
    )
    return result.returncode == 0


# -- the healer's audit log -----------------------------------------------------------


def audit_events(state: LabState) -> list[dict[str, Any]]:
    path = Path(state.audit_log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_event(state: LabState, match: Callable[[dict[str, Any]], bool], since: float, timeout: float) -> dict[str, Any]:
    """The first record of the healer's audit log at or after ``since`` (POSIX time) that ``match`` accepts."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in audit_events(state) if e["ts"] >= since and match(e)][:1]
        return bool(found)

    wait_for(seen, timeout, "a matching event in the healer's audit log", interval=0.05)
    return found[0]
