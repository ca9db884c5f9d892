"""Everything the lab changes from what the program renders for the clouds: the one place to read (and review) it.

The lab runs what ``run_offline`` renders (the path of ``resinfra plan`` and ``render``).
Addresses and ports stay as rendered: every machine has its own network namespace, so its
private address, its ports and its own loopback (where Prometheus, Alertmanager and the
healer listen on the tooling VM) are the production ones. What differs:

1. **Paths**: every file lives under the lab's state directory (:func:`tooling_layout`,
   :func:`healer_layout`, :func:`machine_path`).
2. **Timings**: alerts after seconds instead of minutes (:data:`LAB_TIMINGS`), and the
   healer's startup grace, cooldown and evaluation tick (:func:`healer_policy`,
   :data:`HEALER_TICK_SECONDS`).
3. **Processes**: started with their units' command lines, as root and without systemd;
   node_exporter with only the collectors the rules and dashboards read
   (``resinfra.monitoring_local.node_exporter_argv``), to spare a small machine's CPU.
4. **Size**: ``--workers N`` sets every site's ``workers`` before the program runs (:func:`with_workers`).
5. **Secrets**: the healer's bearer token and Grafana's password are random per lab (the
   offline run only has placeholders).
6. **Replacement**: the healer's action re-creates the machine's namespace instead of running
   ``pulumi up --replace`` (:data:`REPLACE_SECONDS` stands in for the provider's VM creation).
7. **Placeholder public addresses**: a stack's public addresses in a reserved or documentation
   range (the committed stacks' Proxmox ``publicRange``, 203.0.113.0/24) are what a user replaces
   with real ones, and what GCP refuses as a VPN peer; the lab replaces them with addresses of its
   own underlay (:func:`with_lab_addresses`) before the program runs.
8. **IKE and BGP retries**: every charon retransmits after 1 s, 1.4 s, ... four times
   (``resinfra.netlab.charon.STRONGSWAN_CONF``; strongSwan's defaults: 4 s, five times, growing 1.8 times,
   about 165 s before a peer is declared dead), and every BGP speaker reconnects every 2 s (bird's
   default: 120 s). The clouds' own retry timers are not documented.
9. **BGP hold time**: the GCP Cloud Router keeps its default keepalive of 20 s (hold 60 s) instead of
   the program's 60 s (hold 180 s, chosen to match Azure's fixed timers, :func:`with_lab_bgp_timers`):
   a dead Azure instance's BGP session then expires after a minute instead of three, the most a lab
   test should wait. The lab's Azure (bird) follows the hold time it agrees, so the lab cannot show
   what a real Azure's fixed 60 s keepalive does against a 60 s hold.
10. **Gateway pairs** (``gateways: 2``, :mod:`resinfra.lab.pairs`): what ``GatewayPair`` pushes over SSH is written
   under each member's directory (the failover environment file with those paths, its charon's socket and, on Hetzner,
   the emulated API's endpoint ``http://<subnet .1>:8080/v1`` instead of ``https://api.hetzner.cloud/v1``); keepalived
   runs with its unit's options, as root; the Hetzner token file holds the lab's own token (:data:`LAB_FAILOVER_TOKEN`:
   the stack's, a secret, is the real project's and never enters the lab), each API action takes
   :data:`HCLOUD_ACTION_SECONDS`; a member's node_exporter also runs the textfile collector on its directory (Debian's build enables it on ``/var/lib/prometheus/node-exporter``, change 3 turns the defaults off).
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resinfra.config import HealerConfig
from resinfra.lab.clouds.gcp import refused_peer
from resinfra.monitoring_local import LOCAL_TIMINGS
from resinfra.render.healer import HealerLayout
from resinfra.render.monitoring import ToolingLayout

LAB_TIMINGS = dataclasses.replace(LOCAL_TIMINGS, latency_for=30, resource_for=30, healer_repeat_interval=10)
"""The production rules at a scale one can watch, as in the loopback tests: scrape every second, NodeDown after 3 s
(production: 15 s and 60 s, so a kill takes over a minute to be noticed). Alertmanager repeats a firing alert to the
healer every 10 s, so a restarted healer relearns what is firing within seconds (production: 5 minutes); latency and
resource alerts wait 30 s, so a busy lab machine does not trip them."""

STARTUP_GRACE_SECONDS = 10
"""A fresh machine gets 10 s to boot (production default 900 s): a lab machine boots in well under a second."""
COOLDOWN_SECONDS = 60
"""The least ``resinfra:healer.cooldownSeconds`` accepts (production default 600 s)."""
HEALER_TICK_SECONDS = 1.0
"""The healer re-decides every second without a webhook (production 15 s), so grace and backoff end on time."""
REPLACE_SECONDS = 2.0
"""How long the lab's replacement waits between destroying the machine and creating it again: the provider's VM
creation and first boot take minutes; the lab keeps a short, visible window (a healer restarted in it finds an
interrupted repair)."""


def tooling_layout(production: ToolingLayout, root: Path) -> ToolingLayout:
    """The tooling VM's layout with every path under ``root``; endpoints unchanged (the VM's namespace has its own loopback)."""
    return dataclasses.replace(
        production,
        config_dir=str(root / "etc/prometheus"),
        prometheus_data_dir=str(root / "var/lib/prometheus/metrics2"),
        alertmanager_data_dir=str(root / "var/lib/prometheus/alertmanager"),
        grafana_dir=str(root / "etc/grafana"),
        systemd_dir=str(root / "etc/systemd/system"),
    )


def healer_layout(root: Path) -> HealerLayout:
    """The healer's files under ``root`` (settings, token, journal, audit log), named as on the tooling VM."""
    return HealerLayout(
        etc_dir=str(root / "etc/resinfra-healer"),
        state_dir=str(root / "var/lib/resinfra-healer"),
        log_dir=str(root / "var/log/resinfra-healer"),
        lib_dir=str(root / "usr/local/lib/resinfra-healer"),
        systemd_dir=str(root / "etc/systemd/system"),
    )


def healer_policy(production: HealerConfig) -> HealerConfig:
    """The stack's ``resinfra:healer`` settings with the lab's waits; every other threshold (maxUnhealthy, flapping,
    repairGateways, dryRun) is the stack's own."""
    return production.model_copy(update={"startup_grace_seconds": STARTUP_GRACE_SECONDS, "cooldown_seconds": COOLDOWN_SECONDS})


def machine_path(machine_root: Path, path: str) -> Path:
    """Where a machine's file (``/etc/prometheus/blackbox.yml``) lives in the lab: under the machine's own directory."""
    return machine_root / path.lstrip("/")


def with_workers(values: Mapping[str, Any], workers: int | None) -> dict[str, Any]:
    """The stack config with every site's ``workers`` set to ``workers`` (None: as configured)."""
    out = copy.deepcopy(dict(values))
    if workers is not None:
        for site in out.get("resinfra:sites") or []:
            if isinstance(site, dict):
                site["workers"] = workers
    return out


HCLOUD_ACTION_SECONDS = 0.5
"""How long an emulated Hetzner API action (assign a Floating IP, change a route) runs: Hetzner documents no duration."""
LAB_FAILOVER_TOKEN = "lab-hcloud-token"
"""The emulated Hetzner project's token (the lab's; never a real one)."""


LAB_PUBLIC_RANGE = ipaddress.IPv4Network("100.127.0.0/16")
"""Where the lab puts public addresses that stand in for a stack's placeholders: shared address space (RFC 6598), like
the offline run's own public addresses, and a range GCP takes as a VPN peer."""


def with_lab_addresses(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The stack config with every Proxmox ``publicRange`` GCP would refuse (a reserved or documentation range, as in the
    committed stacks) moved into :data:`LAB_PUBLIC_RANGE` (the site number's block of the same size, the gateway at the
    same offset), and a line per change for the user.

    Example: site 4's ``203.0.113.16/28`` with gateway ``.17`` becomes ``100.127.0.64/28`` with ``100.127.0.65``.
    """
    out = copy.deepcopy(dict(values))
    notes = []
    for site in out.get("resinfra:sites") or []:
        if not isinstance(site, dict) or site.get("provider") != "proxmox" or "publicRange" not in site:
            continue
        old = ipaddress.IPv4Network(site["publicRange"], strict=False)
        reserved = refused_peer(str(old.network_address))
        if reserved is None:
            continue
        new = list(LAB_PUBLIC_RANGE.subnets(new_prefix=old.prefixlen))[int(site.get("number", 0))]
        site["publicRange"] = str(new)
        if "publicGateway" in site:
            offset = int(ipaddress.IPv4Address(site["publicGateway"])) - int(old.network_address)
            site["publicGateway"] = str(new.network_address + offset)
        notes.append(f"{site.get('name')}: publicRange {old} is in {reserved}, which GCP refuses as a VPN peer; the lab uses {new}")
    return out, notes


LAB_CLOUD_ROUTER_KEEPALIVE_SECONDS = 20
"""Cloud Router's default keepalive (hold 60 s); production sets 60 s (``sites.gcp.ROUTER_KEEPALIVE_SECONDS``)."""


def with_lab_bgp_timers(descriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The GCP ends' descriptions with the Cloud Router's default keepalive (item 9 above); others unchanged."""
    out = copy.deepcopy(descriptions)
    for description in out:
        if "cloudRouter" in description:
            description["cloudRouter"]["keepaliveIntervalSeconds"] = LAB_CLOUD_ROUTER_KEEPALIVE_SECONDS
    return out
