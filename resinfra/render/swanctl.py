"""swanctl.conf for a strongSwan gateway: one connection per tunnel, its PSK, retry and DPD."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from resinfra.mesh.crypto import CHILD_REKEY_SECONDS, DPD_DELAY_SECONDS, IKE_REKEY_SECONDS, POLICY
from resinfra.render.jinja import render_template

SWANCTL_PATH = "/etc/swanctl/conf.d/resinfra-mesh.conf"
"""Debian's /etc/swanctl/swanctl.conf includes conf.d/*.conf."""


@dataclass(frozen=True)
class SwanChild:
    """A CHILD_SA: which traffic the tunnel carries."""

    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    if_id: int | None = None
    """XFRM interface id (route-based child): its SA is used for packets routed through that
    interface, so two children with the same selectors to two peers coexist."""


@dataclass(frozen=True)
class SwanConnection:
    """One IKE_SA to one peer, authenticated with its own PSK."""

    name: str
    local_address: str
    remote_address: str
    psk: str
    children: tuple[SwanChild, ...]
    ike_proposal: str = POLICY.ike_proposal
    esp_proposal: str = POLICY.esp_proposal
    ike_rekey_seconds: int = IKE_REKEY_SECONDS
    child_rekey_seconds: int = CHILD_REKEY_SECONDS
    dpd_delay_seconds: int = DPD_DELAY_SECONDS

    @property
    def psk_base64(self) -> str:
        """The PSK in swanctl's ``0s`` base64 form: no quoting rules apply to any character."""
        return "0s" + base64.b64encode(self.psk.encode()).decode()


def render_swanctl(connections: Sequence[SwanConnection]) -> str:
    """swanctl.conf text for ``connections`` (sorted by name, so the text is stable).

    Every connection initiates at load (``start_action = start``: userspace ESP drops
    packets on trap policies), retries forever (``keyingtries = 0``) so a peer that comes
    up later is reached, restarts on DPD timeout and re-creates a CHILD_SA the peer closes.

    Example: ``render_swanctl([SwanConnection("hetzner-proxmox-0", "198.51.100.4",
    "203.0.113.18", psk, (SwanChild("net", ("10.10.48.0/20",), ("10.10.64.0/20",)),))])``.
    """
    names = [c.name for c in connections]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate connection names: {names}")
    for connection in connections:
        if not connection.psk:
            raise ValueError(f"{connection.name}: empty PSK")
    return render_template("swanctl.conf.j2", connections=sorted(connections, key=lambda c: c.name))
