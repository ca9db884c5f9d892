"""``lab status``: a running lab's report as data (:func:`status_report`) and as the text a user reads
(:func:`format_status`), and the UIs' addresses on this machine."""

from __future__ import annotations

import textwrap
import time
from typing import Any

from resinfra.lab import pairs
from resinfra.lab.observe import audit_events, firing_alerts, scrape_targets, tunnel_report, tunnel_sites
from resinfra.lab.preconditions import require_root, root_of
from resinfra.lab.state import LabState, alive, load
from resinfra.mesh.crypto import DPD_DELAY_SECONDS
from resinfra.netlab.charon import dead_peer_seconds as netlab_dead_peer_seconds


def status_report(name: str, events: int = 10) -> dict[str, Any]:
    """What ``lab status`` shows, as data."""
    require_root("status")  # the state directory is root's
    state = load(root_of(name))
    lab = state.netlab()
    report: dict[str, Any] = {
        "name": state.name,
        "stack": state.stack,
        "configFile": state.config_file,
        "workers": state.workers,
        "upSeconds": round(time.time() - state.created, 1),
        "ui": ui_urls(state),
        "partitioned": state.partitioned,
        "partitionedSeconds": {site: round(time.time() - at, 1) for site, at in state.partitioned_at.items()},
        "failedInstances": {s.key: s.failed_routers for s in state.sites if s.failed_routers},
        "tunnels": tunnel_report(lab),
        "tunnelSites": tunnel_sites(lab),
        "expectedTunnels": state.tunnels,
        "processes": {key: alive(p) for key, p in state.processes.items()},
        "deadMachines": sorted(m.name for m in state.machines.values() if m.dead),
        "gatewayPairs": pairs.pair_states(state),
    }
    try:
        report["targets"] = [
            {
                "job": t["labels"]["job"],
                "node": t["labels"].get("node", ""),
                "site": t["labels"].get("site", ""),
                "source": t["labels"].get("source_site", ""),
                "instance": t["labels"].get("instance", ""),
                "health": t["health"],
            }
            for t in scrape_targets(state.ui["prometheus"])
        ]
        report["alerts"] = [{"name": a["labels"]["alertname"], "labels": a["labels"], "since": a["startsAt"]} for a in firing_alerts(state.ui["alertmanager"])]
    except OSError as err:
        report["targets"], report["alerts"] = [], []
        report["monitoringError"] = f"{type(err).__name__}: {err}"
    report["healer"] = [e for e in audit_events(state) if e["event"] != "alert"][-events:]
    return report


def ui_urls(state: LabState) -> dict[str, str]:
    return {
        "prometheus": f"http://127.0.0.1:{state.ui['prometheus']}/",
        "alertmanager": f"http://127.0.0.1:{state.ui['alertmanager']}/",
        "healer": f"http://127.0.0.1:{state.ui['healer']}/metrics",
    }


def format_ui(state: LabState) -> str:
    urls = ui_urls(state)
    return "\n".join(
        [
            "UIs on this machine (forwarded into the tooling VM's namespace):",
            f"  Prometheus      {urls['prometheus']}   (in the lab: {state.ui_targets['prometheus']})",
            f"  Alertmanager    {urls['alertmanager']}   (in the lab: {state.ui_targets['alertmanager']})",
            f"  healer metrics  {urls['healer']}   (in the lab: {state.ui_targets['healer']})",
        ]
    )


def _target_name(target: dict[str, Any]) -> str:
    """A node's name; a probe's ``prober site -> probed machine``."""
    return f"{target['source']} -> {target['node']}" if target["source"] else target["node"] or target["instance"]


STATUS_WIDTH = 150
"""``lab status`` wraps longer lines at word boundaries."""


def dead_peer_seconds() -> float:
    """How long the lab's charons take to declare a silent peer dead (the mesh's DPD delay, then the lab's retransmits)."""
    return netlab_dead_peer_seconds(DPD_DELAY_SECONDS)


def format_status(report: dict[str, Any]) -> str:
    lines = [
        f"lab {report['name']}: stack {report['stack']} ({report['configFile']})"
        + (f", {report['workers']} worker(s) per site" if report["workers"] is not None else "")
        + f", up {report['upSeconds']:.0f} s",
        "",
        "UIs:",
        *(f"  {ui:13s} {url}" for ui, url in report["ui"].items()),
        "",
    ]
    ends = 2 * report["expectedTunnels"]
    established = sum(sum(conns.values()) for conns in report["tunnels"].values())
    lines.append(f"Tunnels: {report['expectedTunnels']} tunnels, {established}/{ends} ends established")
    members = {m["key"]: m for site_members in report["gatewayPairs"].values() for m in site_members}
    for key, conns in report["tunnels"].items():
        mark = "  PARTITIONED (uplink cut)" if report["tunnelSites"].get(key) in report["partitioned"] else ""
        if not conns and key in members:
            lines.append(f"  {key:24s} {members[key]['state']}: no tunnels loaded{mark}")
            continue
        lines.append(
            f"  {key:24s} "
            + (
                "  ".join(f"{c} {'up' if ok else 'DOWN'}" for c, ok in conns.items())
                or ("no links: a stack of one site" if report["expectedTunnels"] == 0 else "charon not answering")
            )
            + mark
        )
    for site, instances in report.get("failedInstances", {}).items():
        lines.append(f"  {site}: gateway instance(s) {', '.join(instances)} killed (lab revive-instance restores)")
    notice = dead_peer_seconds()
    for site, seconds in sorted(report.get("partitionedSeconds", {}).items()):
        if seconds < notice:
            lines.append(
                f"  {site} was cut off {seconds:.0f} s ago: its tunnels show up until dead-peer detection notices, "
                f"about {notice:.0f} s after the cut ({DPD_DELAY_SECONDS} s without traffic, then the lab's IKE retransmits)"
            )
    if report["gatewayPairs"]:
        lines += ["", "Gateway pairs (keepalived; the MASTER holds the shared address and carries the tunnels):"]
        for site, site_members in report["gatewayPairs"].items():
            lines.append(f"  {site:10s} " + "   ".join(f"{m['machine']} {m['state']}" for m in site_members))
    targets = report["targets"]
    up_count = sum(1 for t in targets if t["health"] == "up")
    lines += ["", f"Scrape targets: {up_count}/{len(targets)} up"]
    for job in sorted({t["job"] for t in targets}):
        of_job = [t for t in targets if t["job"] == job]
        down = [t for t in of_job if t["health"] != "up"]
        lines.append(f"  {job:13s} {len(of_job) - len(down)}/{len(of_job)} up" + ("; down: " + ", ".join(_target_name(t) for t in down) if down else ""))
    if "monitoringError" in report:
        lines.append(f"  (Prometheus/Alertmanager not answering: {report['monitoringError']})")
    lines += ["", f"Firing alerts: {len(report['alerts'])}"]
    for alert in report["alerts"]:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()) if k in ("site", "node", "source_site", "tunnel"))
        lines.append(f"  {alert['name']:16s} {labels}  since {alert['since'][:19]}")
    lines += ["", "Healer (latest decisions and repairs, from its audit log):"]
    if not report["healer"]:
        lines.append("  none yet")
    for e in report["healer"]:
        what = " ".join(str(e[k]) for k in ("kind", "reason", "outcome") if e.get(k))
        subject = e.get("machine") or (f"site {e['site']}" if e.get("site") else "")
        head = f"  {e['time']}  {e['event']:17s} {subject:28s} {what}"
        # Whole words on lines of at most STATUS_WIDTH: a decision's detail is its reason spelled out.
        lines += textwrap.wrap(f"{head}  {e.get('detail', '')}".rstrip(), STATUS_WIDTH, subsequent_indent=" " * 24, break_long_words=False)
    dead = [k for k, ok in report["processes"].items() if not ok]
    lines += ["", f"Processes: {len(report['processes']) - len(dead)}/{len(report['processes'])} running" + (f"; stopped: {', '.join(dead)}" if dead else "")]
    if report["deadMachines"]:
        lines.append(f"Killed and not replaced yet: {', '.join(report['deadMachines'])}")
    return "\n".join(lines)
