"""A gateway pair's members in the lab: each VM's namespace (``wan`` on the underlay, ``lan`` on the site's bridge),
created, removed for a replacement, and which member carries the site's tunnels. What the members share (keepalived's
addresses) and their daemons are :mod:`resinfra.lab.pairs`'."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from resinfra.netlab.process import LabError, run
from resinfra.netlab.topology import LabSite, fixed_mac

if TYPE_CHECKING:
    from resinfra.netlab.lab import Lab


def pair_site(lab: Lab, key: str) -> LabSite | None:
    """The site whose pair has member ``key``."""
    return next((s for s in lab.sites.values() if s.pair is not None and key in {m.key for m in s.pair.members}), None)


def add_pair_member(lab: Lab, site_key: str, key: str) -> str:
    """Create a pair member's namespace (again, after a replacement): ``wan`` on the underlay with its own public
    address, ``lan`` on the site's bridge with its private one, the routes its networks give it. Returns the
    namespace. What it shares (keepalived's addresses) and its daemons are :mod:`resinfra.lab.pairs`'."""
    site = lab.sites[site_key]
    assert site.pair is not None
    member = site.pair.member(key)
    index = site.pair.members.index(member) + 1
    ns = lab.gw_ns(key)
    lab.create_namespace(ns)
    lab.make_router(ns)
    lab.plug_underlay(ns, key, member.public_ip, (member.public_ip,), member.public_prefix)
    lan = ipaddress.IPv4Interface(member.lan)
    port = f"m{index}"
    run(
        "ip",
        "link",
        "add",
        "name",
        "lan",
        "netns",
        ns,
        "address",
        fixed_mac(str(lan.ip)),
        "type",
        "veth",
        "peer",
        "name",
        port,
        "netns",
        lab.gw_ns(site_key),
    )
    run("ip", "-n", lab.gw_ns(site_key), "link", "set", "dev", port, "master", "lan", "up")
    run("ip", "-n", ns, "addr", "add", str(lan), "dev", "lan")
    run("ip", "-n", ns, "link", "set", "dev", "lan", "up")
    for destination, via in site.pair.lan_routes:
        run("ip", "-n", ns, "route", "replace", destination, "via", via, "dev", "lan")
    lab.site_dir(key).mkdir(parents=True, exist_ok=True)
    return ns


def remove_pair_member(lab: Lab, site_key: str, key: str) -> None:
    """Delete a pair member's namespace and its veths (its processes must be gone), so it can be created again."""
    site = lab.sites[site_key]
    assert site.pair is not None
    index = site.pair.members.index(site.pair.member(key)) + 1
    run("ip", "-n", lab.gw_ns(site_key), "link", "del", "dev", f"m{index}", check=False)
    run("ip", "-n", lab.wan_ns, "link", "del", "dev", lab.wan_port(key), check=False)
    run("ip", "netns", "del", lab.gw_ns(key), check=False)
    if lab.gw_ns(key) in lab.namespaces:
        lab.namespaces.remove(lab.gw_ns(key))


def pair_carrier(lab: Lab, site: str) -> str | None:
    """The member of ``site``'s pair whose charon has the site's tunnels loaded and every one installed, if any."""
    pair = lab.sites[site].pair
    assert pair is not None
    for member in pair.members:
        if member.key in lab.failed:
            continue
        try:
            loaded = lab.loaded(member.key)
        except LabError:
            continue
        if loaded and set(loaded) <= lab.all_children_up(member.key):
            return member.key
    return None
