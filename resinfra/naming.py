"""Resource and host names, and the naming rules of each provider.

Every name the program gives is ``<prefix>-<site>`` (the site stem) plus a short suffix,
so one check of the stem's length per provider covers every name on the site.
"""

from __future__ import annotations

from resinfra.config import MAX_WORKERS, Provider, Site

MAX_SUFFIX = len("-worker-") + len(str(MAX_WORKERS)) + len("-nic")
"""Longest suffix any component appends to a site stem (``-worker-100-nic``)."""

NAME_LIMITS: dict[Provider, tuple[int, str]] = {
    Provider.GCP: (63, "GCP resource names are at most 63 characters"),
    Provider.AZURE: (64, "Azure Linux VM names are at most 64 characters"),
    Provider.HETZNER: (63, "Hetzner server names are RFC 1123 host names of at most 63 characters"),
    Provider.PROXMOX: (63, "Proxmox VE VM names are DNS names of at most 63 characters"),
}


def stem(prefix: str, site: str) -> str:
    """Common start of every name on a site: ``ri-dev-hetzner``."""
    return f"{prefix}-{site}"


def link_name(first: str, second: str) -> str:
    """The mesh link between two sites, lower-numbered site first: ``gcp-azure``. Plan, outputs
    and the monitoring's ``tunnel`` label all use it, so an alert names the link as the plan does."""
    return f"{first}-{second}"


def child_name(site_stem: str, suffix: str) -> str:
    """A resource name on a site: ``child_name("ri-dev-gcp", "fw-ssh")`` is ``ri-dev-gcp-fw-ssh``."""
    name = f"{site_stem}-{suffix}"
    if len(suffix) + 1 > MAX_SUFFIX:
        raise ValueError(f"suffix {suffix!r} is longer than MAX_SUFFIX; raise MAX_SUFFIX so check_names covers it")
    return name


def check_names(prefix: str, site: Site) -> list[tuple[str, str]]:
    """Problems (message, fix) with the names derived from ``prefix`` and the site's name."""
    limit, rule = NAME_LIMITS[Provider(site.provider)]
    longest = len(stem(prefix, site.name)) + MAX_SUFFIX
    if longest <= limit:
        return []
    example = stem(prefix, site.name) + f"-worker-{MAX_WORKERS}-nic"
    return [
        (
            f"derived names such as {example!r} reach {longest} characters; {rule}",
            f"shorten resinfra:prefix or the site name by {longest - limit} characters",
        )
    ]


MESH_ROLES = ("lng", "conn", "tun", "if", "bgp", "rt", "peer", "psk")
"""Short words naming a mesh resource's role: ``ri-dev-azure-conn-gcp-0``."""
MESH_INDEX_WIDTH = 1
"""Tunnel indexes are 0 or 1."""


def mesh_name(site_stem: str, role: str, peer: str, index: int | None = None) -> str:
    """Name of a mesh resource on a site: ``mesh_name("ri-dev-azure", "conn", "gcp", 0)`` is
    ``ri-dev-azure-conn-gcp-0``. Peer site names keep the names readable in review."""
    if role not in MESH_ROLES:
        raise ValueError(f"unknown mesh role {role!r}")
    return f"{site_stem}-{role}-{peer}" + (f"-{index}" if index is not None else "")


def check_mesh_names(prefix: str, site: Site, peers: list[Site]) -> list[tuple[str, str]]:
    """Problems (message, fix) with mesh resource names on ``site`` for each of its ``peers``."""
    limit, rule = NAME_LIMITS[Provider(site.provider)]
    longest_role = max(len(r) for r in MESH_ROLES)
    for peer in peers:
        length = len(stem(prefix, site.name)) + 1 + longest_role + 1 + len(peer.name) + 1 + MESH_INDEX_WIDTH
        if length > limit:
            example = mesh_name(stem(prefix, site.name), "conn", peer.name, 0)
            return [
                (
                    f"tunnel resource names such as {example!r} reach {length} characters; {rule}",
                    f"shorten resinfra:prefix, this site's name or the name of site {peer.name!r} by {length - limit} characters",
                )
            ]
    return []
