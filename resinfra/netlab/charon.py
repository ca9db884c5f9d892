"""strongSwan's charon as the lab runs it: its binary and plugins, the lab's IKE retransmits, the strongswan.conf each
charon gets, and the one adaptation made to every swanctl.conf loaded (:func:`pin_reqids`).

Every charon runs with its own strongswan.conf (kernel-libipsec before kernel-netlink: there
is no kernel ESP here), its own vici socket and its own /run (charon's pid file path is
fixed), all under the lab's work directory.

libipsec picks a packet's outbound SA by reqid alone, while the kernel also matches the
peer's address; when several tunnels negotiate at once (both ends re-initiating after an
outage), charon's dynamic reqids can end up swapped between two tunnels, which the kernel
shrugs off and libipsec does not (traffic leaves through the other tunnel's SA).
"""

from __future__ import annotations

import re
from pathlib import Path

CHARON = "/usr/lib/ipsec/charon"
CHARON_PLUGINS = (
    "random nonce openssl pem pkcs1 gcm aes sha2 hmac kdf curve25519 "
    # kernel-libipsec must come before kernel-netlink: it provides the IPsec backend,
    # kernel-netlink the routes and addresses.
    "kernel-libipsec kernel-netlink socket-default vici"
)
RETRANSMIT_TIMEOUT = 1.0
RETRANSMIT_BASE = 1.4
RETRANSMIT_TRIES = 4
"""The lab's IKE retransmits (changes.py item 8): after 1 s, 1.4 s, ... four times, then the peer is dead."""


def dead_peer_seconds(dpd_delay: float) -> float:
    """How long after a peer goes silent its tunnel is declared down: ``dpd_delay`` without traffic, then every
    retransmit's wait: timeout x base^n for n = 0..tries (strongSwan's "Retransmission" documentation: the defaults
    4 s, 1.8, 5 tries give 165 s)."""
    return dpd_delay + sum(RETRANSMIT_TIMEOUT * RETRANSMIT_BASE**n for n in range(RETRANSMIT_TRIES + 1))


STRONGSWAN_CONF = """\
# Rendered by resinfra.netlab: one charon per network namespace, userspace ESP.
charon {{
    load_modular = no
    load = {plugins}
    install_routes = yes
    retransmit_timeout = {retransmit_timeout}
    retransmit_base = {retransmit_base}
    retransmit_tries = {retransmit_tries}
    plugins {{
        vici {{
            socket = unix://{vici}
        }}
    }}
    filelog {{
        lab {{
            path = {log}
            time_format = %H:%M:%S
            flush_line = yes
            default = 1
            ike = 1
        }}
    }}
}}
"""


def strongswan_conf(vici: Path, log: Path) -> str:
    """The strongswan.conf of one charon: its vici socket and its log file, the plugins and the lab's retransmits."""
    return STRONGSWAN_CONF.format(
        plugins=CHARON_PLUGINS,
        vici=vici,
        log=log,
        retransmit_timeout=RETRANSMIT_TIMEOUT,
        retransmit_base=RETRANSMIT_BASE,
        retransmit_tries=RETRANSMIT_TRIES,
    )


_CHILD_TS = re.compile(r"^(?P<indent>\s+)local_ts = ", re.MULTILINE)
_REQID = re.compile(r"^\s+reqid = \d+\n", re.MULTILINE)


def pin_reqids(swanctl_conf: str) -> str:
    """The same swanctl.conf with a fixed ``reqid`` per CHILD_SA, numbered in order (1, 2, ...).

    Example: a child block's ``local_ts = 10.10.48.0/20`` line gets ``reqid = 1`` before it.
    """
    counter = iter(range(1, 1 << 16))
    unpinned = _REQID.sub("", swanctl_conf)  # pinning twice gives the same text
    return _CHILD_TS.sub(lambda m: f"{m['indent']}reqid = {next(counter)}\n{m[0]}", unpinned)
