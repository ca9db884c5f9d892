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
    VRRP = "vrrp"
    """IP protocol 112 (``/etc/protocols``): a gateway pair's keepalived adverts."""
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
    accept: bool = True
    """False: a rule that drops (ordered before the accepting rules it narrows)."""


def ingress_rules(cfg: StackConfig, role: Role, vrrp_peer: str | None = None) -> list[IngressRule]:
    """Inbound rules for a machine of ``role``, in order (the first that matches decides); everything else is dropped.

    SSH only from the admin networks, everything from the supernet (the mesh), and on
    gateways IKE, NAT-T and ESP from anywhere: peers include managed gateways whose
    addresses the clouds pick. A gateway of a pair (``vrrp_peer``: the other one's private
    address) takes VRRP from that address only, ahead of the supernet rule.

    Example: ``ingress_rules(cfg, Role.WORKER)`` gives the ``ssh-admin`` and
    ``supernet`` rules.
    """
    rules = [IngressRule("ssh-admin", Protocol.TCP, SSH_PORT, tuple(cfg.admin_cidrs), "SSH from the admin networks")]
    if role is Role.GATEWAY and vrrp_peer is not None:
        rules += [
            IngressRule("vrrp-pair", Protocol.VRRP, None, (f"{vrrp_peer}/32",), "VRRP adverts from the other gateway of the pair"),
            # Only the partner may take part in the election: any other machine's advert could take the site's tunnels.
            IngressRule("vrrp-others", Protocol.VRRP, None, (cfg.supernet,), "VRRP from any other machine", accept=False),
        ]
    rules.append(IngressRule("supernet", Protocol.ANY, None, (cfg.supernet,), "everything from the private network"))
    if role is Role.GATEWAY:
        rules += [
            IngressRule("ike", Protocol.UDP, IKE_PORT, (ANYWHERE,), "IKE from VPN peers"),
            IngressRule("nat-t", Protocol.UDP, NAT_T_PORT, (ANYWHERE,), "IKE and ESP in UDP (NAT traversal) from VPN peers"),
            IngressRule("esp", Protocol.ESP, None, (ANYWHERE,), "ESP from VPN peers"),
        ]
    return rules
