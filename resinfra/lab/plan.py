"""The lab's plan, pure: from an offline run of the program to namespaces, gateways, machines and the tooling VM's files.

Nothing here starts anything. The monitoring and the healer come from the same plan and
renderers as on the tooling VM, with :mod:`resinfra.lab.changes` applied.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resinfra import stack
from resinfra.addressing import Role
from resinfra.healer.alerts import format_time
from resinfra.healer.settings import HealerSettings
from resinfra.lab import changes
from resinfra.lab.gateways import MeshGateway, run_gateways
from resinfra.lab.pairs import member_key
from resinfra.lab.state import MachinePlace
from resinfra.naming import stem
from resinfra.netlab import Lab
from resinfra.offline import OfflineRun
from resinfra.render.healer import HealerLayout, settle_seconds
from resinfra.render.monitoring import MonitoringPlan


class LabMachine(MachinePlace):
    """A machine of the stack's inventory, as the lab will run it."""

    user_data: str
    """The user-data the program renders for it: the lab boots it from this."""


@dataclass(frozen=True)
class LabPlan:
    """Everything ``resinfra lab up`` builds, before anything is built."""

    name: str
    root: Path
    gateways: tuple[MeshGateway, ...]
    machines: tuple[LabMachine, ...]
    monitoring: MonitoringPlan
    healer: HealerSettings
    healer_layout: HealerLayout
    inventory: tuple[Mapping[str, Any], ...]
    """The stack's ``inventory`` output (what the healer reads)."""
    tunnels: int
    """Tunnels the mesh declares (each has two ends)."""

    @property
    def wan_namespace(self) -> str:
        return f"{self.name}-wan"

    @property
    def net_dir(self) -> Path:
        """The netlab work directory: one folder per gateway (charon, bird, their logs)."""
        return self.root / "net"

    @property
    def tooling(self) -> LabMachine:
        return next(m for m in self.machines if m.role is Role.TOOLING)

    @property
    def tooling_root(self) -> Path:
        return self.machine_root(self.tooling.name)

    @property
    def inventory_file(self) -> Path:
        """The inventory the healer reads (``pulumi stack output inventory --json`` plus creation times)."""
        return self.root / "inventory.json"

    def machine_root(self, machine: str) -> Path:
        return self.root / "machines" / machine

    def namespaces(self) -> list[str]:
        """Every namespace the lab will create, in creation order (``lab down`` removes exactly these)."""
        names = [self.wan_namespace]
        for gateway in self.gateways:
            names.append(f"{self.name}-{gateway.site}")
            cloud = gateway.lab_site.cloud
            if cloud is not None:
                parts = [r.key for r in cloud.routers] + [t.key for t in cloud.tunnels]
                names += [f"{self.name}-{Lab.part_key(gateway.site, part)}" for part in parts]
            names += [m.namespace for m in self.machines if m.site == gateway.site and (m.own_namespace or m.paired)]
        return names


def namespace_suffix(prefix: str, machine: str, site: str) -> str:
    """A machine's namespace suffix: its name without ``<prefix>-<site>-`` (``worker-1``, ``tooling``)."""
    return machine.removeprefix(f"{stem(prefix, site)}-")


def lab_plan(run: OfflineRun, name: str, root: Path) -> LabPlan:
    """The lab for an offline run of the program.

    + run: ``run_offline`` of the stack (with ``--workers`` applied to its config)
    + name: the lab's name, prefix of every namespace it creates
    + root: the lab's state directory

    Per site one gateway namespace (the strongSwan gateway VM's, or the cloud's network, with
    a namespace per gateway instance and per tunnel behind it, or a pair's network with a
    namespace per gateway VM); every worker and the tooling VM get their own namespace behind it.
    """
    prefix = run.config.prefix
    user_data = {f.machine: f.content for f in run.files if f.purpose == "cloud-init"}
    gateways = []
    machines = []
    for gateway in run_gateways(run, nodes_per_site=0):
        site_plan = run.result.plan[gateway.site]
        own = [m for m in site_plan.machines if m.role is not Role.GATEWAY]
        site = dataclasses.replace(
            gateway.lab_site,
            nodes=tuple(ipaddress.IPv4Interface(f"{m.private_ip}/{site_plan.subnet.prefixlen}") for m in own),
            node_names=tuple(namespace_suffix(prefix, m.name, gateway.site) for m in own),
        )
        gateways.append(dataclasses.replace(gateway, lab_site=site))
        # A gateway VM is its site's gateway namespace; the others have their own, behind it.
        placed = [(site_plan.gateway_vm, f"{name}-{gateway.site}", None)] if site_plan.gateway_vm is not None else []
        # A pair's members have their own namespaces beside the site's network (resinfra.lab.pairs).
        placed += [(m, f"{name}-{member_key(gateway.site, k)}", None) for k, m in enumerate(site_plan.gateway_vms if site_plan.pair else (), start=1)]
        placed += [(m, f"{name}-{gateway.site}-{suffix}", i) for i, (m, suffix) in enumerate(zip(own, site.node_names, strict=True), start=1)]
        machines += [
            LabMachine(
                name=m.name,
                site=gateway.site,
                role=m.role,
                private_ip=str(m.private_ip),
                namespace=ns,
                node_index=i,
                paired=site_plan.pair is not None and m.role is Role.GATEWAY,
                user_data=user_data[m.name],
            )
            for m, ns, i in placed
        ]
    production = stack.monitoring_plan(run.config, run.result.sites)
    tooling_root = root / "machines" / run.result.tooling_node.name
    monitoring = dataclasses.replace(production, layout=changes.tooling_layout(production.layout, tooling_root), timings=changes.LAB_TIMINGS)
    healer_layout = changes.healer_layout(tooling_root)
    healer = HealerSettings(
        listen_host=monitoring.layout.healer.host,
        listen_port=monitoring.layout.healer.port,
        token_file=healer_layout.token_file,
        journal=healer_layout.journal,
        audit_log=healer_layout.audit_log,
        stack=None,
        policy=changes.healer_policy(run.config.healer),
        tick_seconds=changes.HEALER_TICK_SECONDS,
        settle_seconds=settle_seconds(changes.LAB_TIMINGS),
    )
    return LabPlan(
        name=name,
        root=root,
        gateways=tuple(gateways),
        machines=tuple(machines),
        monitoring=monitoring,
        healer=healer,
        healer_layout=healer_layout,
        inventory=tuple(run.outputs["inventory"]),
        tunnels=sum(int(t["tunnels"]) for t in run.outputs["tunnels"]),
    )


def inventory_document(inventory: Sequence[Mapping[str, Any]], created: Mapping[str, float]) -> str:
    """The healer's inventory file: the stack's ``inventory`` output, each machine with its creation time (RFC 3339),
    as the state's ``created`` would give it."""
    return json.dumps([{**m, "created": format_time(created[m["name"]])} for m in inventory], indent=2) + "\n"
