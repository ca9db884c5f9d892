"""The pack's policies: name, level, description and the plain function that decides."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from resinfra_policies.addresses import check_static_addresses
from resinfra_policies.common import Context, Props
from resinfra_policies.crypto import check_ipsec_crypto
from resinfra_policies.exposure import check_admin_ports
from resinfra_policies.labels import check_labels
from resinfra_policies.sizes import check_vm_size

Check = Callable[[str, Props, Context], list[str]]


class Level(enum.StrEnum):
    """Mirrors ``pulumi_policy.EnforcementLevel`` without importing the SDK here."""

    MANDATORY = "mandatory"
    ADVISORY = "advisory"


@dataclass(frozen=True)
class PolicySpec:
    name: str
    description: str
    level: Level
    check: Check
    why: str
    """Why this level (docs/ARCHITECTURE.md repeats it)."""


POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec(
        "no-public-admin-ports",
        "No SSH or monitoring/management UI port is open to 0.0.0.0/0 (GCP firewalls, Azure NSGs, Hetzner firewalls, Proxmox VM firewalls).",
        Level.MANDATORY,
        check_admin_ports,
        "an open SSH or Grafana port is the original project's worst defect; nothing justifies it in review",
    ),
    PolicySpec(
        "strong-ipsec-crypto",
        "Every IPsec connection, tunnel and swanctl.conf uses IKEv2 with AES/AES-GCM, SHA-2 and MODP>=2048/ECP groups only.",
        Level.MANDATORY,
        check_ipsec_crypto,
        "SHA1/MODP1024 tunnels are the other defect resinfra exists to remove",
    ),
    PolicySpec(
        "static-public-addresses",
        "Gateways and the tooling VM use static public addresses; public address resources are static and outlive their machine.",
        Level.MANDATORY,
        check_static_addresses,
        "dynamic addresses are what forced two applies and terraform taint in the original",
    ),
    PolicySpec(
        "vm-size-allow-list",
        "Machine sizes come from the environment's allow-list (policy/resinfra_policies/sizes.py or the pack config's allowedSizes).",
        Level.MANDATORY,
        check_vm_size,
        "a size typo or a 64-core prod size in dev is a bill, and the list is cheap to extend in the same pull request",
    ),
    PolicySpec(
        "resinfra-labels",
        "Every resource that supports labels/tags carries resinfra-stack and resinfra-site, machines also resinfra-role.",
        Level.ADVISORY,
        check_labels,
        "labels serve billing and humans, not safety: a provider upgrade that adds label support to a type must not block a deploy",
    ),
)


def evaluate(resource_type: str, props: Props, context: Context) -> dict[str, list[str]]:
    """Every policy's violations for one resource, by policy name (empty lists dropped)."""
    out = {}
    for policy in POLICIES:
        violations = policy.check(resource_type, props, context)
        if violations:
            out[policy.name] = violations
    return out
