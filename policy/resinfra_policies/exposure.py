"""No SSH or monitoring/management UI port open to the whole internet, on any provider's firewall."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from resinfra_policies.common import Context, Props, as_list, get

ADMIN_PORTS = {
    22: "SSH",
    3000: "Grafana",
    8006: "Proxmox VE web UI",
    9090: "Prometheus",
    9093: "Alertmanager",
    9100: "node_exporter",
    9115: "blackbox_exporter",
}
"""Ports that must only be reachable from admin networks or the mesh."""

PROXMOX_MACRO_PORTS = {"ssh": {22}}
"""Proxmox rule macros that open an admin port."""

_WORLD_WORDS = {"*", "any", "internet"}
"""Azure's service tags and wildcards that mean "everyone"."""


def is_world(source: object) -> bool:
    """Whether a rule source means the whole internet (``0.0.0.0/0``, ``::/0``, Azure ``*``/``Internet``)."""
    text = str(source).strip().lower()
    if text in _WORLD_WORDS:
        return True
    try:
        return ipaddress.ip_network(text, strict=False).prefixlen == 0
    except ValueError:
        return False


def ports_of(spec: object, range_sep: str = "-") -> set[int] | None:
    """Ports a port spec covers, limited to :data:`ADMIN_PORTS`; None means every port.

    Accepts ``22``, ``"22"``, ``"20-30"`` (``"20:30"`` for Proxmox), comma lists, and the
    wildcards ``*``/``any``/empty.
    """
    if spec is None:
        return None
    text = str(spec).strip().lower()
    if text in {"", "*", "any", "all"}:
        return None
    covered: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if range_sep in part:
            low, high = (int(float(x)) for x in part.split(range_sep, 1))
            covered |= {p for p in ADMIN_PORTS if low <= p <= high}
        else:
            port = int(float(part))
            if port in ADMIN_PORTS:
                covered.add(port)
    return covered


def _union(specs: Iterable[object], range_sep: str = "-") -> set[int] | None:
    out: set[int] = set()
    for spec in specs:
        ports = ports_of(spec, range_sep)
        if ports is None:
            return None
        out |= ports
    return out


def _message(where: str, ports: set[int] | None, source: str) -> str:
    opened = set(ADMIN_PORTS) if ports is None else ports
    names = ", ".join(f"{ADMIN_PORTS[p]} ({p})" for p in sorted(opened))
    return f"{where} opens {names} to {source}: allow admin ports only from resinfra:adminCidrs or the supernet"


def _gcp_firewall(props: Props) -> list[str]:
    if str(get(props, "direction") or "INGRESS").upper() != "INGRESS" or get(props, "disabled") is True:
        return []
    sources = as_list(get(props, "sourceRanges"))
    # GCP: an ingress rule with no source at all applies to 0.0.0.0/0.
    no_source = not sources and not get(props, "sourceTags") and not get(props, "sourceServiceAccounts")
    if not no_source and not any(is_world(s) for s in sources):
        return []
    out = []
    for allow in as_list(get(props, "allows")):
        protocol = str(get(allow, "protocol") or "").lower()
        if protocol not in {"tcp", "all", "6"}:
            continue
        ports = None if not as_list(get(allow, "ports")) else _union(as_list(get(allow, "ports")))
        if ports is None or ports:
            out.append(_message("GCP firewall rule", ports, "0.0.0.0/0"))
    return out


def _azure_rule(rule: Props, where: str) -> list[str]:
    if str(get(rule, "direction") or "").lower() != "inbound" or str(get(rule, "access") or "").lower() != "allow":
        return []
    if str(get(rule, "protocol") or "*").lower() not in {"tcp", "*"}:
        return []
    sources = [get(rule, "sourceAddressPrefix"), *as_list(get(rule, "sourceAddressPrefixes"))]
    if not any(s is not None and is_world(s) for s in sources):
        return []
    port_specs = [p for p in [get(rule, "destinationPortRange"), *as_list(get(rule, "destinationPortRanges"))] if p is not None]
    ports = _union(port_specs) if port_specs else None
    if ports is None or ports:
        return [_message(f"{where} rule {get(rule, 'name') or ''}".strip(), ports, "the internet")]
    return []


def _hcloud_firewall(props: Props) -> list[str]:
    out = []
    for rule in as_list(get(props, "rules")):
        if str(get(rule, "direction") or "").lower() != "in" or str(get(rule, "protocol") or "").lower() != "tcp":
            continue
        if not any(is_world(s) for s in as_list(get(rule, "sourceIps"))):
            continue
        ports = ports_of(get(rule, "port"))
        if ports is None or ports:
            out.append(_message("Hetzner firewall rule", ports, "0.0.0.0/0"))
    return out


def _proxmox_rules(props: Props) -> list[str]:
    out = []
    for rule in as_list(get(props, "rules")):
        if str(get(rule, "type") or "in").lower() != "in" or str(get(rule, "action") or "").upper() != "ACCEPT":
            continue
        if get(rule, "enabled") is False:
            continue
        source = get(rule, "source")
        # Proxmox: a rule without a source matches every source.
        if source is not None and not any(is_world(s) for s in str(source).split(",")):
            continue
        macro = str(get(rule, "macro") or "").lower()
        if macro:
            ports: set[int] | None = set(PROXMOX_MACRO_PORTS.get(macro, set()))
        elif str(get(rule, "proto") or "tcp").lower() not in {"tcp", "6"}:
            continue
        else:
            ports = ports_of(get(rule, "dport"), range_sep=":")
        if ports is None or ports:
            out.append(_message("Proxmox firewall rule", ports, "every source"))
    return out


def _proxmox_options(props: Props) -> list[str]:
    if get(props, "enabled") is False:
        return ["Proxmox VM firewall is disabled: every port, SSH included, is open to every source; set enabled: true"]
    if str(get(props, "inputPolicy") or "DROP").upper() == "ACCEPT":
        return ["Proxmox VM firewall input policy is ACCEPT: every port, SSH included, is open; use DROP"]
    return []


def check_admin_ports(resource_type: str, props: Props, context: Context) -> list[str]:
    """Violations of "no SSH or UI port open to 0.0.0.0/0".

    + resource_type: e.g. ``gcp:compute/firewall:Firewall``
    + props: the resource's inputs (camelCase)

    Example: an hcloud firewall rule ``{direction: in, protocol: tcp, port: "22",
    sourceIps: ["0.0.0.0/0"]}`` gives one violation naming SSH (22).
    """
    if resource_type == "gcp:compute/firewall:Firewall":
        return _gcp_firewall(props)
    if resource_type == "azure-native:network:NetworkSecurityGroup":
        return [v for rule in as_list(get(props, "securityRules")) for v in _azure_rule(rule, "Azure NSG")]
    if resource_type == "azure-native:network:SecurityRule":
        return _azure_rule(props, "Azure NSG")
    if resource_type == "hcloud:index/firewall:Firewall":
        return _hcloud_firewall(props)
    if resource_type == "proxmoxve:firewall/rulesLegacy:RulesLegacy":
        return _proxmox_rules(props)
    if resource_type == "proxmoxve:firewall/optionsLegacy:OptionsLegacy":
        return _proxmox_options(props)
    return []
