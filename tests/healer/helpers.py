"""A dev-stack-shaped inventory and alert builders for the healer's tests."""

from __future__ import annotations

from resinfra.addressing import Role
from resinfra.healer.alerts import Alert, format_time
from resinfra.healer.inventory import Machine

NOW = 1_800_000_000.0
OLD = NOW - 7 * 86400
"""Created a week ago: out of any startup grace."""

SHAPE = {"gcp": ("gcp", 0, 2), "azure": ("azure", 0, 2), "hetzner": ("hetzner", 1, 2), "proxmox": ("proxmox", 1, 2)}


def urn(name: str) -> str:
    return f"urn:pulumi:dev::resinfra::resinfra:sites:Site$compute:Instance::{name}"


def inventory(created: float = OLD, **created_by_name: float) -> list[Machine]:
    """11 machines like the dev stack: gcp and azure 2 workers each; hetzner gateway VM, tooling VM, 2 workers; proxmox gateway VM, 2 workers."""
    machines = []
    for site, (provider, gateway_vms, workers) in SHAPE.items():
        names = [(f"ri-dev-{site}-gw", Role.GATEWAY)] * gateway_vms
        if site == "hetzner":
            names.append((f"ri-dev-{site}-tooling", Role.TOOLING))
        names += [(f"ri-dev-{site}-worker-{i}", Role.WORKER) for i in range(1, workers + 1)]
        for name, role in names:
            machines.append(Machine(name, site, provider, role, urn(name), created_by_name.get(name.removeprefix("ri-dev-"), created)))
    return machines


def paired_inventory() -> list[Machine]:
    """The dev-shaped inventory with a gateway pair on Proxmox (``gateways: 2``): ri-dev-proxmox-gw-1 and -gw-2."""
    machines = [m for m in inventory() if m.name != "ri-dev-proxmox-gw"]
    return machines + [Machine(f"ri-dev-proxmox-gw-{k}", "proxmox", "proxmox", Role.GATEWAY, urn(f"ri-dev-proxmox-gw-{k}"), OLD) for k in (1, 2)]


def node_down(name: str, starts: float, status: str = "firing") -> Alert:
    site = name.removeprefix("ri-dev-").split("-")[0]
    labels = {"alertname": "NodeDown", "node": name, "site": site, "role": "gateway" if "-gw" in name else "worker", "scope": "node"}
    return Alert("NodeDown", status, labels, starts, f"nd-{name}")


def site_unreachable(site: str, starts: float) -> Alert:
    return Alert("SiteUnreachable", "firing", {"alertname": "SiteUnreachable", "site": site, "scope": "site"}, starts, f"su-{site}")


def tunnel_down(source: str, site: str, starts: float) -> Alert:
    tunnel = "--".join(sorted((source, site)))
    labels = {"alertname": "TunnelDown", "source_site": source, "site": site, "tunnel": tunnel, "scope": "site"}
    return Alert("TunnelDown", "firing", labels, starts, f"td-{source}-{site}")


def webhook(*alerts: Alert) -> dict[str, object]:
    """An Alertmanager version 4 body carrying ``alerts`` (the shape of the recorded fixtures)."""
    return {
        "version": "4",
        "status": "firing" if any(a.status == "firing" for a in alerts) else "resolved",
        "receiver": "healer",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "groupKey": "{}",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": a.status,
                "labels": dict(a.labels),
                "annotations": {},
                "startsAt": format_time(a.starts_at),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": a.fingerprint,
            }
            for a in alerts
        ],
    }
