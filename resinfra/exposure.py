"""What each machine accepts from outside: one rule list that every provider's firewall is built from."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from resinfra.addressing import Role
from resinfra.config import StackConfig

IKE_PORT = 500
NAT_T_PORT = 4500
SSH_PORT = 22
ANYWHERE = "0.0.0.0/0"


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ESP = "esp"
    ANY = "any"


@dataclass(frozen=True)
class IngressRule:
    """Traffic a machine accepts: protocol, optional port, source networks."""

    name: str
    """Short id, used in resource and rule names."""
    protocol: Protocol
    port: int | None
    sources: tuple[str, ...]
    description: str


def ingress_rules(cfg: StackConfig, role: Role) -> list[IngressRule]:
    """Inbound rules for a machine of ``role``; everything else is dropped.

    SSH only from the admin networks, everything from the supernet (the mesh), and on
    gateways IKE, NAT-T and ESP from anywhere: peers include managed gateways whose
    addresses the clouds pick.

    Example: ``ingress_rules(cfg, Role.WORKER)`` gives the ``ssh-admin`` and
    ``supernet`` rules.
    """
    rules = [
        IngressRule("ssh-admin", Protocol.TCP, SSH_PORT, tuple(cfg.admin_cidrs), "SSH from the admin networks"),
        IngressRule("supernet", Protocol.ANY, None, (cfg.supernet,), "everything from the private network"),
    ]
    if role is Role.GATEWAY:
        rules += [
            IngressRule("ike", Protocol.UDP, IKE_PORT, (ANYWHERE,), "IKE from VPN peers"),
            IngressRule("nat-t", Protocol.UDP, NAT_T_PORT, (ANYWHERE,), "IKE and ESP in UDP (NAT traversal) from VPN peers"),
            IngressRule("esp", Protocol.ESP, None, (ANYWHERE,), "ESP from VPN peers"),
        ]
    return rules
