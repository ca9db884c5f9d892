"""XFRM interfaces of a strongSwan gateway: the route-based tunnels' ends (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resinfra.render.jinja import render_template

XFRM_SCRIPT_PATH = "/usr/local/sbin/resinfra-xfrm-interfaces"
XFRM_UNIT_PATH = "/etc/systemd/system/resinfra-xfrm.service"
XFRM_UNIT = "resinfra-xfrm.service"


@dataclass(frozen=True)
class XfrmInterface:
    """One XFRM interface: packets routed through it use the SA whose child carries ``if_id``."""

    name: str
    if_id: int


def render_xfrm_script(interfaces: Sequence[XfrmInterface]) -> str:
    """A bash script creating ``interfaces`` (those missing) on the uplink, up, with loose
    reverse-path filtering: a peer with two tunnels may answer through either, while the
    route to its block points at one.

    Example: ``render_xfrm_script([XfrmInterface("xfrm1004", 1004)])``.
    """
    if not interfaces:
        raise ValueError("no XFRM interface to create")
    for interface in interfaces:
        if not 0 < len(interface.name) <= 15 or interface.if_id <= 0:  # IFNAMSIZ; if_id 0 means "none"
            raise ValueError(f"bad XFRM interface {interface}")
    return render_template("resinfra-xfrm-interfaces.sh.j2", interfaces=sorted(interfaces, key=lambda i: i.if_id))


def render_xfrm_unit(script: str = XFRM_SCRIPT_PATH) -> str:
    """The oneshot unit running the script at boot, before charon loads the tunnels."""
    return render_template("resinfra-xfrm.service.j2", script=script)
