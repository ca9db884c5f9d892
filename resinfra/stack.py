"""The program: validated config -> address plan -> site components -> stack outputs.

This is the one place where user-facing config becomes component Args.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from resinfra import addressing, config, images
from resinfra.addressing import Role, SiteAddresses
from resinfra.config import Provider, Site, StackConfig
from resinfra.failover.component import GatewayPair, GatewayPairArgs
from resinfra.images import RoleImage
from resinfra.mesh.component import IpsecMesh, IpsecMeshArgs
from resinfra.mesh.plan import LinkPlan, azure_bgp_addresses, plan_links
from resinfra.naming import stem
from resinfra.remote import PushVia, SshAccess
from resinfra.render import monitoring
from resinfra.render.cloud_init import CloudInitSpec, Route, render_cloud_init
from resinfra.render.failover import render_env, render_failover_script, render_keepalived
from resinfra.render.tooling_files import BootExtras, prober_boot
from resinfra.sites.base import Node, SiteComponent
from resinfra.tooling import HealerArgs, ToolingVm, ToolingVmArgs

LABEL_KEYS = ("resinfra-stack", "resinfra-site")
ROLE_LABEL_KEY = "resinfra-role"


@dataclass(frozen=True)
class RenderedFile:
    """A file the program boots a machine with or pushes to it, for ``resinfra render``."""

    machine: str
    purpose: str
    """What it is for: ``cloud-init``, ``swanctl``, ..."""
    filename: str
    content: pulumi.Input[str]


@dataclass
class StackResult:
    """Everything the program declared that callers (``__main__``, ``resinfra plan``, tests) need."""

    config: StackConfig
    plan: dict[str, SiteAddresses]
    sites: list[SiteComponent]
    ssh: SshAccess
    """How configuration pushes log in to machines."""
    outputs: dict[str, Any] = field(default_factory=dict)
    files: list[RenderedFile] = field(default_factory=list)
    mesh: IpsecMesh | None = None
    pairs: list[GatewayPair] = field(default_factory=list)
    """The gateway pairs' failover (sites with ``gateways: 2``)."""
    tooling: ToolingVm | None = None
    """What runs on the tooling VM (None until the sites are built)."""
    images: dict[str, dict[Role, RoleImage]] = field(default_factory=dict)
    """Per site and role, the image its machines boot."""

    @property
    def tooling_node(self) -> Node:
        """The tooling VM's machine."""
        return next(n for c in self.sites for n in c.nodes if n.role is Role.TOOLING)


def site_labels(stack: str, site: str) -> dict[str, str]:
    """Labels every resource of a site carries (lowercase: GCP's rule is the strictest)."""
    return {"resinfra-stack": label_value(stack), "resinfra-site": site}


def label_value(text: str) -> str:
    """``text`` as a label value every provider takes: GCP's rule (lowercase letters, digits, ``_``
    and ``-``, at most 63 characters) is the strictest, and Pulumi stack names may hold ``.`` and capitals."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def boot_spec(cfg: StackConfig, site: Site, plan: SiteAddresses, machine: addressing.NodeAddress, image: RoleImage) -> CloudInitSpec:
    """What a machine boots with (pure: the renderer's input).

    On a stock image the user-data carries the role's provisioning (images/provision); on a
    Packer image, built from that same source, only what is particular to the machine.
    """
    routes: tuple[Route, ...] = ()
    if Provider(site.provider) is Provider.PROXMOX and machine.role is not Role.GATEWAY:
        # The Proxmox private bridge has no router of its own: workers send the other
        # sites' traffic to the gateway VM themselves.
        assert plan.gateway_address is not None
        routes = (Route(cfg.supernet, str(plan.gateway_address)),)
    extras = BootExtras()
    if machine.role is Role.WORKER and machine.index == monitoring.PROBER_WORKER_INDEX and site.name != cfg.tooling_site:
        extras = prober_boot(str(machine.private_ip), monitoring.AlertTimings())
    return CloudInitSpec(
        hostname=machine.name,
        role=machine.role,
        admin_user=cfg.admin_user,
        ssh_public_key=cfg.ssh_public_key,
        private_ip=str(machine.private_ip),
        routes=routes,
        extra_files=extras.files,
        extra_commands=extras.commands,
        provisioning=images.boot_provisioning(machine.role) if image.full_user_data else None,
    )


def _site_component(
    cfg: StackConfig,
    site: Site,
    plan: SiteAddresses,
    user_data: Mapping[str, str],
    site_images: Mapping[Role, RoleImage],
    stack_name: str,
    links: list[LinkPlan],
) -> SiteComponent:
    # Provider modules are imported on demand: each SDK takes seconds to import and a
    # stack uses only the providers it has sites on.
    name = stem(cfg.prefix, site.name)
    labels = site_labels(stack_name, site.name)
    common: dict[str, Any] = {
        "stack": cfg,
        "addresses": plan,
        "user_data": user_data,
        "images": site_images,
        "labels": labels,
        "role_labels": {role: {**labels, ROLE_LABEL_KEY: role.value} for role in Role},
        "tooling_size": cfg.tooling.size,
    }
    if isinstance(site, config.GcpSite):
        from resinfra.sites import gcp

        return gcp.GcpSite(name, gcp.GcpSiteArgs(site=site, credentials=gcp.credentials_from_config(), **common))
    if isinstance(site, config.AzureSite):
        from resinfra.sites import azure

        bgp_addresses = azure_bgp_addresses(links, site.name, instances=2 if site.active_active else 1)
        return azure.AzureSite(name, azure.AzureSiteArgs(site=site, credentials=azure.credentials_from_config(), custom_bgp_addresses=bgp_addresses, **common))
    if isinstance(site, config.HetznerSite):
        from resinfra.sites import hetzner

        return hetzner.HetznerSite(name, hetzner.HetznerSiteArgs(site=site, token=hetzner.credentials_from_config(), **common))
    from resinfra.sites import proxmox

    return proxmox.ProxmoxSite(name, proxmox.ProxmoxSiteArgs(site=site, credentials=proxmox.credentials_from_config(), **common))


def build(cfg: StackConfig) -> StackResult:
    """Declare every resource of the stack and return what was declared.

    + cfg: a validated stack config (see :func:`resinfra.config.load`)
    """
    stack_name = pulumi.get_stack()
    plan = addressing.plan(cfg)
    ssh = SshAccess(user=cfg.admin_user, private_key=pulumi.Config(config.NAMESPACE).require_secret("sshPrivateKey"), via=PushVia(cfg.push_via))
    result = StackResult(config=cfg, plan=plan, sites=[], ssh=ssh)
    links = plan_links(cfg, plan)
    for site in cfg.sites:
        site_plan = plan[site.name]
        site_images = images.site_images(cfg, site)
        result.images[site.name] = site_images
        user_data = {m.name: render_cloud_init(boot_spec(cfg, site, site_plan, m, site_images[m.role])) for m in site_plan.machines}
        result.files += [RenderedFile(name, "cloud-init", "user-data.yaml", text) for name, text in user_data.items()]
        result.sites.append(_site_component(cfg, site, site_plan, user_data, site_images, stack_name, links))
    result.mesh = _mesh(cfg, links, result) if links else None
    result.pairs = [
        _gateway_pair(cfg, site_config, component, result) for site_config, component in zip(cfg.sites, result.sites, strict=True) if component.gateway.paired
    ]
    result.tooling = _tooling_component(cfg, result)
    result.files += [RenderedFile(result.tooling_node.name, f.purpose, f.path.lstrip("/"), f.content) for f in result.tooling.files]
    result.outputs = stack_outputs(result)
    return result


def _mesh(cfg: StackConfig, links: list[LinkPlan], result: StackResult) -> IpsecMesh:
    """The tunnels between the sites, and the files they add to ``resinfra render``."""
    mesh = IpsecMesh(
        f"{cfg.prefix}-mesh",
        IpsecMeshArgs(prefix=cfg.prefix, links=links, sites=result.sites, site_configs={s.name: s for s in cfg.sites}, ssh=result.ssh),
    )
    result.files += [RenderedFile(machine, "swanctl", "swanctl.conf", text) for machine, text in mesh.swanctl.items()]
    # Managed gateways are no machines: their descriptions go in a folder named after the gateway.
    result.files += [RenderedFile(f"{stem(cfg.prefix, m.site)}-vpn-gw", "managed-ipsec", f"{m.link}.json", m.content) for m in mesh.managed_ends]
    return mesh


def _gateway_pair(cfg: StackConfig, site: Site, component: SiteComponent, result: StackResult) -> GatewayPair:
    """A site's two gateway VMs failing over to each other, and the files they get for ``resinfra render``."""
    public_prefix = ipaddress.IPv4Network(site.public_range).prefixlen if isinstance(site, config.ProxmoxSite) else None
    token = pulumi.Config(config.NAMESPACE).require_secret(config.FAILOVER_TOKEN_KEY) if isinstance(site, config.HetznerSite) else None
    pair = GatewayPair(
        f"{stem(cfg.prefix, site.name)}-gw-pair",
        GatewayPairArgs(site=component, supernet=cfg.supernet, ssh=result.ssh, public_prefix=public_prefix, token=token),
    )
    for index, node in enumerate(component.gateway_nodes):
        failover = pair.failovers.apply(lambda fs, i=index: fs[i])
        result.files += [
            RenderedFile(node.name, "keepalived", "keepalived.conf", failover.apply(render_keepalived)),
            RenderedFile(node.name, "failover", "gateway.env", failover.apply(render_env)),
            RenderedFile(node.name, "failover-script", "resinfra-failover", render_failover_script()),
        ]
    return pair


def monitoring_plan(cfg: StackConfig, sites: list[SiteComponent]) -> monitoring.MonitoringPlan:
    """What the tooling VM monitors: every machine the site components created (the inventory),
    sites in number order, the order the mesh names its links in."""
    number = {s.name: s.number for s in cfg.sites}
    by_number = sorted(sites, key=lambda c: number[c.site_name])
    nodes = [monitoring.InventoryNode(n.name, n.site, n.provider.value, n.role, n.private_ip) for c in by_number for n in c.nodes]
    (tooling,) = [n for n in nodes if n.role is Role.TOOLING]
    return monitoring.monitoring_plan(
        nodes,
        monitoring.ToolingLayout(grafana=monitoring.Endpoint(tooling.private_ip, monitoring.GRAFANA_PORT)),
        thresholds=monitoring.Thresholds(latency_seconds=cfg.tooling.latency_threshold_ms / 1000),
        healer=cfg.healer.backend_url is not None,
    )


def _tooling_component(cfg: StackConfig, result: StackResult) -> ToolingVm:
    plan = monitoring_plan(cfg, result.sites)
    return ToolingVm(
        f"{result.tooling_node.name}-services",
        ToolingVmArgs(
            node=result.tooling_node,
            monitoring=plan,
            ssh=result.ssh,
            notification_webhook_url=pulumi.Config(config.NAMESPACE).get_secret("notificationWebhookUrl"),
            healer=_healer_args(cfg),
        ),
    )


def _healer_args(cfg: StackConfig) -> HealerArgs | None:
    """The healer's deployment: only with a backend it can reach (``resinfra:healer.backendUrl``)."""
    if cfg.healer.backend_url is None:
        return None
    from resinfra.cli import project_dir
    from resinfra.render.healer import project_bundle

    stack_name = pulumi.get_stack()
    secrets = pulumi.Config(config.NAMESPACE)
    return HealerArgs(
        config=cfg.healer,
        stack=stack_name,
        bundle=project_bundle(project_dir(), stack_name),
        environment=secrets.get_secret_object("healerEnvironment"),
        google_credentials=secrets.get_secret("healerGoogleCredentials"),
    )


def stack_outputs(result: StackResult) -> dict[str, Any]:
    """Stack outputs: per site its addresses and machines, and the inventory of every node."""
    sites = {}
    inventory = []
    for component in result.sites:
        plan = component.addresses
        sites[component.site_name] = {
            "provider": component.provider_kind.value,
            "block": str(plan.block),
            "subnet": str(plan.subnet),
            "gateway": {
                "kind": component.gateway.kind.value,
                "publicIps": list(component.gateway.public_ips),
                "innerIp": component.gateway.inner_ip,
                # The VMs running it: one, or the pair that shares publicIps (and innerIp on Proxmox).
                "vms": [n.name for n in component.gateway_nodes],
            },
            "workers": [{"name": n.name, "privateIp": n.private_ip, "publicIp": n.public_ip} for n in component.nodes if n.role is Role.WORKER],
        }
        inventory += [
            {
                "name": n.name,
                "site": n.site,
                "provider": n.provider.value,
                "role": n.role.value,
                "privateIp": n.private_ip,
                "publicIp": n.public_ip,
                "urn": n.urn,
            }
            for n in component.nodes
        ]
    tooling = next(n for n in inventory if n["role"] == Role.TOOLING.value)
    layout = monitoring_plan(result.config, result.sites).layout
    user = result.config.admin_user
    return {
        "sites": sites,
        "inventory": inventory,
        "tooling": {
            **{k: tooling[k] for k in ("name", "site", "privateIp", "publicIp")},
            # Prometheus, Alertmanager and Grafana are reached only through this tunnel (or across the mesh).
            "sshTunnel": pulumi.Output.from_input(tooling["publicIp"]).apply(lambda ip: monitoring.ssh_tunnel_command(layout, user, ip)),
        },
        # Per link: kind, routing, crypto and each end's public addresses; never a PSK.
        "tunnels": result.mesh.link_outputs if result.mesh else [],
    }


def load_from_runtime(*, deployment: bool) -> StackConfig:
    """Validate the running stack's ``resinfra:*`` config (raises :class:`config.ConfigError`).

    + deployment: refuse the placeholders a real deployment cannot use too (see :func:`main`)
    """
    values: dict[str, Any] = dict(pulumi.runtime.config.get_config_env())
    values.update(pulumi.runtime.config.CONFIG.get())
    return config.load(values, deployment=deployment)


def main(export: Callable[[str, Any], None] = pulumi.export, *, offline: bool = False) -> StackResult:
    """Entry point of ``__main__.py``: fail on bad config before declaring anything.

    + offline: the program runs under mocks (``resinfra.offline.run_offline``: plan, render,
      the lab), not under the Pulumi engine. Only then are the example stacks' placeholder
      addresses let through; ``__main__.py`` never sets it, so whatever the engine runs
      (``pulumi preview``/``up``, the healer's targeted updates) is a real deployment.
    """
    try:
        cfg = load_from_runtime(deployment=not offline)
    except config.ConfigError as err:
        # RunError: Pulumi prints the message alone, without a Python traceback.
        raise pulumi.RunError(str(err)) from None
    result = build(cfg)
    for key, value in result.outputs.items():
        export(key, value)
    return result
