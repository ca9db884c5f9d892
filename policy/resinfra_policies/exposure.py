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


MAX_PUBLIC_SHARE = 1 / 1024
"""Largest share of the public IPv4 space a rule's sources may cover together (the pack config's
``adminSourcesMaxShare`` replaces it); the stack config's ``adminCidrsMaxShare`` has the same default."""
NOT_PUBLIC_IPV4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
        "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
    )
)  # fmt: skip
"""Not globally reachable (IANA IPv4 Special-Purpose Address Registry). The pack does not import the program, so this
list repeats ``resinfra.config.NOT_PUBLIC_IPV4``; tests/policy checks the two agree."""
PUBLIC_IPV4_ADDRESSES = 2**32 - sum(n.num_addresses for n in NOT_PUBLIC_IPV4)
WIDE_IPV6_PREFIX = 16
"""An IPv6 source this wide or wider (a /16 is 2^112 addresses) is the internet for this purpose."""


def is_world(source: object) -> bool:
    """Whether a rule source means the whole internet (``0.0.0.0/0``, ``::/0``, Azure ``*``/``Internet``)."""
    text = str(source).strip().lower()
    if text in _WORLD_WORDS:
        return True
    try:
        return ipaddress.ip_network(text, strict=False).prefixlen == 0
    except ValueError:
        return False


def _overlap(a: ipaddress.IPv4Network, b: ipaddress.IPv4Network) -> int:
    return a.num_addresses if a.subnet_of(b) else b.num_addresses if b.subnet_of(a) else 0


def too_wide(sources: Iterable[object], max_share: float = MAX_PUBLIC_SHARE) -> str | None:
    """What a rule's sources open to, judged together, when that is too much; None when they stay small.

    Too much: a world word or ``/0``; any public IPv4 /8 or wider after merging the sources
    (``0.0.0.0/1`` + ``128.0.0.0/1`` is ``0.0.0.0/0``); more than ``max_share`` of the public
    IPv4 space in all; an IPv6 /16 or wider. Example: ``too_wide(["0.0.0.0/1", "128.0.0.0/1"])``
    is ``"0.0.0.0/0"``.
    """
    v4: list[ipaddress.IPv4Network] = []
    for source in sources:
        if source is None:
            continue
        if is_world(source):
            text = str(source).strip()
            return "0.0.0.0/0" if "/" in text and ":" not in text else "the internet" if text.lower() in _WORLD_WORDS else text
        try:
            net = ipaddress.ip_network(str(source).strip(), strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv6Network):
            if net.prefixlen <= WIDE_IPV6_PREFIX:
                return str(net)
            continue
        v4.append(net)
    merged = list(ipaddress.collapse_addresses(v4))
    wide = [n for n in merged if n.prefixlen <= 8 and not any(n.subnet_of(p) for p in NOT_PUBLIC_IPV4)]
    if wide:
        return ", ".join(map(str, wide))
    covered = sum(n.num_addresses - sum(_overlap(n, p) for p in NOT_PUBLIC_IPV4) for n in merged)
    if covered / PUBLIC_IPV4_ADDRESSES > max_share:
        return f"{', '.join(map(str, merged))} ({covered / PUBLIC_IPV4_ADDRESSES:.2%} of the public IPv4 space)"
    return None


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


def _gcp_firewall(props: Props, share: float) -> list[str]:
    if str(get(props, "direction") or "INGRESS").upper() != "INGRESS" or get(props, "disabled") is True:
        return []
    sources = as_list(get(props, "sourceRanges"))
    # GCP: an ingress rule with no source at all applies to 0.0.0.0/0.
    no_source = not sources and not get(props, "sourceTags") and not get(props, "sourceServiceAccounts")
    opened_to = "0.0.0.0/0" if no_source else too_wide(sources, share)
    if opened_to is None:
        return []
    out = []
    for allow in as_list(get(props, "allows")):
        protocol = str(get(allow, "protocol") or "").lower()
        if protocol not in {"tcp", "all", "6"}:
            continue
        ports = None if not as_list(get(allow, "ports")) else _union(as_list(get(allow, "ports")))
        if ports is None or ports:
            out.append(_message("GCP firewall rule", ports, opened_to))
    return out


def _azure_rule(rule: Props, where: str, share: float) -> list[str]:
    if str(get(rule, "direction") or "").lower() != "inbound" or str(get(rule, "access") or "").lower() != "allow":
        return []
    if str(get(rule, "protocol") or "*").lower() not in {"tcp", "*"}:
        return []
    sources = [get(rule, "sourceAddressPrefix"), *as_list(get(rule, "sourceAddressPrefixes"))]
    opened_to = too_wide(sources, share)
    if opened_to is None:
        return []
    port_specs = [p for p in [get(rule, "destinationPortRange"), *as_list(get(rule, "destinationPortRanges"))] if p is not None]
    ports = _union(port_specs) if port_specs else None
    if ports is None or ports:
        return [_message(f"{where} rule {get(rule, 'name') or ''}".strip(), ports, opened_to)]
    return []


def _hcloud_firewall(props: Props, share: float) -> list[str]:
    out = []
    for rule in as_list(get(props, "rules")):
        if str(get(rule, "direction") or "").lower() != "in" or str(get(rule, "protocol") or "").lower() != "tcp":
            continue
        opened_to = too_wide(as_list(get(rule, "sourceIps")), share)
        if opened_to is None:
            continue
        ports = ports_of(get(rule, "port"))
        if ports is None or ports:
            out.append(_message("Hetzner firewall rule", ports, opened_to))
    return out


def _proxmox_rules(props: Props, share: float) -> list[str]:
    out = []
    for rule in as_list(get(props, "rules")):
        if str(get(rule, "type") or "in").lower() != "in" or str(get(rule, "action") or "").upper() != "ACCEPT":
            continue
        if get(rule, "enabled") is False:
            continue
        source = get(rule, "source")
        # Proxmox: a rule without a source matches every source.
        opened_to = "every source" if source is None else too_wide(str(source).split(","), share)
        if opened_to is None:
            continue
        macro = str(get(rule, "macro") or "").lower()
        if macro:
            ports: set[int] | None = set(PROXMOX_MACRO_PORTS.get(macro, set()))
        elif str(get(rule, "proto") or "tcp").lower() not in {"tcp", "6"}:
            continue
        else:
            ports = ports_of(get(rule, "dport"), range_sep=":")
        if ports is None or ports:
            out.append(_message("Proxmox firewall rule", ports, opened_to))
    return out


def _proxmox_options(props: Props) -> list[str]:
    if get(props, "enabled") is False:
        return ["Proxmox VM firewall is disabled: every port, SSH included, is open to every source; set enabled: true"]
    if str(get(props, "inputPolicy") or "DROP").upper() == "ACCEPT":
        return ["Proxmox VM firewall input policy is ACCEPT: every port, SSH included, is open; use DROP"]
    return []


def check_admin_ports(resource_type: str, props: Props, context: Context) -> list[str]:
    """Violations of "no SSH or UI port open to the internet": a rule's sources are judged together (:func:`too_wide`).

    + resource_type: e.g. ``gcp:compute/firewall:Firewall``
    + props: the resource's inputs (camelCase)

    Example: an hcloud firewall rule ``{direction: in, protocol: tcp, port: "22",
    sourceIps: ["0.0.0.0/0"]}`` gives one violation naming SSH (22).
    """
    share = float(context.config.get("adminSourcesMaxShare") or MAX_PUBLIC_SHARE)
    if resource_type == "gcp:compute/firewall:Firewall":
        return _gcp_firewall(props, share)
    if resource_type == "azure-native:network:NetworkSecurityGroup":
        return [v for rule in as_list(get(props, "securityRules")) for v in _azure_rule(rule, "Azure NSG", share)]
    if resource_type == "azure-native:network:SecurityRule":
        return _azure_rule(props, "Azure NSG", share)
    if resource_type == "hcloud:index/firewall:Firewall":
        return _hcloud_firewall(props, share)
    if resource_type == "proxmoxve:firewall/rulesLegacy:RulesLegacy":
        return _proxmox_rules(props, share)
    if resource_type == "proxmoxve:firewall/optionsLegacy:OptionsLegacy":
        return _proxmox_options(props)
    return []
