"""The ``IpsecMesh`` component: one link per pair of sites, declared on both ends."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_command
import pulumi_random

from resinfra.config import AzureSite as AzureSiteConfig
from resinfra.config import GcpSite as GcpSiteConfig
from resinfra.config import Provider, Site
from resinfra.failover.plan import FailoverLayout
from resinfra.mesh.describe import GatewayValues, TunnelValues, describe_managed_end, to_json
from resinfra.mesh.plan import LinkPlan, Routing, azure_bgp_addresses
from resinfra.mesh.strongswan import ResolvedTunnel, swan_connections, xfrm_interfaces
from resinfra.naming import mesh_name, stem
from resinfra.remote import SshAccess, push_files
from resinfra.render.push_script import WAIT_FOR_CLOUD_INIT, FileToPush
from resinfra.render.swanctl import SWANCTL_PATH, render_swanctl
from resinfra.render.xfrm import XFRM_SCRIPT_PATH, XFRM_UNIT, XFRM_UNIT_PATH, XfrmInterface, render_xfrm_script, render_xfrm_unit
from resinfra.sites.base import GatewayKind, SiteComponent

if TYPE_CHECKING:  # the GCP SDK loads only for stacks with a GCP site
    from resinfra.mesh.gcp import ClassicGateway

TYPE_TOKEN = "resinfra:mesh:IpsecMesh"
PSK_LENGTH = 48
"""Letters and digits only (every product accepts them): about 285 bits."""
RELOAD_COMMANDS = (
    # A push can arrive before first boot finished installing strongSwan.
    "cloud-init status --wait >/dev/null || true",
    "systemctl enable --now strongswan.service",
    "swanctl --load-all --noprompt",
)


@dataclass(frozen=True)
class IpsecMeshArgs:
    prefix: str
    """``resinfra:prefix``: every mesh resource is named on its site's stem."""
    links: Sequence[LinkPlan]
    """The planned links (:func:`resinfra.mesh.plan.plan_links`)."""
    sites: Sequence[SiteComponent]
    site_configs: Mapping[str, Site]
    ssh: SshAccess
    """How the swanctl.conf pushes log in to strongSwan gateways."""


@dataclass(frozen=True)
class ManagedEndFile:
    """The JSON description of one managed end of one link (holds the PSKs: secret)."""

    site: str
    link: str
    content: pulumi.Output[str]


class IpsecMesh(pulumi.ComponentResource):
    """Every site-to-site tunnel: PSKs, the managed ends' resources, the strongSwan gateways' config pushes."""

    swanctl: dict[str, pulumi.Output[str]]
    """Rendered swanctl.conf (secret) by strongSwan gateway machine name."""
    managed_ends: list[ManagedEndFile]
    """What the program hands Azure and GCP, per link and managed end."""
    link_outputs: list[dict[str, Any]]
    """Per link: name, kind, routing, crypto and each end's endpoints (no secrets)."""

    def __init__(self, name: str, args: IpsecMeshArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        # Explicit providers, like the sites: nothing here reads ambient configuration.
        random_provider = pulumi_random.Provider(f"{name}-random", opts=pulumi.ResourceOptions(parent=self))
        command_provider = pulumi_command.Provider(f"{name}-command", opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self)
        sites = {s.site_name: s for s in args.sites}
        stems = {s.site_name: stem(args.prefix, s.site_name) for s in args.sites}

        psks: dict[tuple[str, int], pulumi.Output[str]] = {}
        for link in args.links:
            # One key per connection: Azure's active-active instances use their connection's one key.
            for connection in link.connections:
                password = pulumi_random.RandomPassword(
                    mesh_name(stems[link.a.site], "psk", link.b.site, connection),
                    length=PSK_LENGTH,
                    special=False,
                    opts=pulumi.ResourceOptions(parent=self, provider=random_provider),
                )
                # The same Output goes to both ends; secret whatever the engine does.
                psks[link.name, connection] = pulumi.Output.secret(password.result)

        classic = self._classic_gateways(args, sites, stems, child)

        def endpoint(link: LinkPlan, site: str, index: int) -> pulumi.Output[str]:
            """The public address ``site``'s end of tunnel ``index`` uses."""
            gateway = sites[site].gateway
            if gateway.kind is GatewayKind.GCP_HA_VPN and link.routing is Routing.STATIC:
                return classic[site].address.address
            return gateway.public_ips[min(index, len(gateway.public_ips) - 1)]

        strongswan_tunnels: dict[str, list[pulumi.Output[ResolvedTunnel]]] = {}
        self.managed_ends = []
        self.link_outputs = []
        last_azure_connection: dict[str, pulumi.Resource] = {}
        for link in args.links:
            for end in (link.a, link.b):
                peer = link.peer(end.site)
                locals_ = [endpoint(link, end.site, t.index) for t in link.tunnels]
                peers = [endpoint(link, peer.site, t.index) for t in link.tunnels]
                secrets = [psks[link.name, t.connection] for t in link.tunnels]
                if end.gateway is GatewayKind.STRONGSWAN:
                    strongswan_tunnels.setdefault(end.site, []).extend(
                        pulumi.Output.all(local, remote, psk).apply(lambda v, link=link, index=t.index: ResolvedTunnel(link, index, v[0], v[1], v[2]))
                        for t, local, remote, psk in zip(link.tunnels, locals_, peers, secrets, strict=True)
                    )
                    continue
                last = self._managed_end(
                    args, link, end.site, sites[end.site], stems[end.site], peers, psks, classic.get(end.site), last_azure_connection.get(end.site), child
                )
                if last is not None:
                    last_azure_connection[end.site] = last
                description = self._describe(args.links, link, end.site, sites[end.site], classic.get(end.site), locals_, peers, secrets)
                self.managed_ends.append(ManagedEndFile(end.site, link.name, description))
            self.link_outputs.append(
                {
                    "name": link.name,
                    "kind": link.kind.value,
                    "routing": link.routing.value,
                    "crypto": link.crypto.describe(),
                    "tunnels": len(link.tunnels),
                    "connections": len(link.connections),
                    "ends": [
                        {
                            "site": e.site,
                            "gateway": e.gateway.value,
                            # Each address once: a strongSwan VM ends both tunnels to active-active Azure.
                            "publicIps": pulumi.Output.all(*(endpoint(link, e.site, t.index) for t in link.tunnels)).apply(
                                lambda ips: list(dict.fromkeys(ips))
                            ),
                        }
                        for e in (link.a, link.b)
                    ],
                }
            )

        self.swanctl = {}
        for site_name, tunnels in strongswan_tunnels.items():
            site = sites[site_name]
            resolved = pulumi.Output.all(*tunnels)
            text = pulumi.Output.secret(resolved.apply(lambda r, s=site_name: render_swanctl(swan_connections(s, r))))
            interfaces = resolved.apply(lambda r, s=site_name: xfrm_interfaces(s, r))
            route_based = any(len(link.tunnels) > 1 for link in args.links if site_name in (link.a.site, link.b.site))
            paired = site.gateway.paired
            # Both VMs of a pair get the same tunnels; only the active one loads them (render/failover.py).
            for gateway_node in site.gateway_nodes:
                self.swanctl[gateway_node.name] = text
                push_files(
                    f"{gateway_node.name}-swanctl",
                    gateway_node,
                    pulumi.Output.all(text, interfaces).apply(lambda v, p=paired: gateway_files(v[0], v[1], paired=p)),
                    reload_commands(route_based, paired=paired),
                    args.ssh,
                    pulumi.ResourceOptions(parent=self, provider=command_provider),
                    # strongSwan comes with the gateway's cloud-init packages: wait for them.
                    before=[WAIT_FOR_CLOUD_INIT],
                )

        self.register_outputs({"links": self.link_outputs})

    @staticmethod
    def _classic_gateways(args: IpsecMeshArgs, sites: Mapping[str, SiteComponent], stems: Mapping[str, str], opts: pulumi.ResourceOptions) -> dict[str, Any]:
        """A Classic VPN gateway on every GCP site that has a statically routed link."""
        from resinfra.mesh import gcp
        from resinfra.sites.gcp import GcpSite

        needed = {e.site for link in args.links if link.routing is Routing.STATIC for e in (link.a, link.b) if e.provider is Provider.GCP}
        out = {}
        for site_name in sorted(needed):
            site, config = sites[site_name], args.site_configs[site_name]
            assert isinstance(site, GcpSite) and isinstance(config, GcpSiteConfig)
            out[site_name] = gcp.build_classic_gateway(stems[site_name], site, config.region, opts)
        return out

    @staticmethod
    def _managed_end(
        args: IpsecMeshArgs,
        link: LinkPlan,
        site_name: str,
        site: SiteComponent,
        site_stem: str,
        peers: list[pulumi.Output[str]],
        psks: Mapping[tuple[str, int], pulumi.Output[str]],
        classic: ClassicGateway | None,
        after: pulumi.Resource | None,
        opts: pulumi.ResourceOptions,
    ) -> pulumi.Resource | None:
        """Declare a managed end; returns an Azure gateway's last connection (the next one follows it)."""
        # Provider modules load on demand, as in the stack: a stack imports only the SDKs it uses.
        config = args.site_configs[site_name]
        keys = [psks[link.name, c] for c in link.connections]
        if site.gateway.kind is GatewayKind.AZURE_VNET_GATEWAY:
            from resinfra.mesh.azure import build_azure_end
            from resinfra.sites.azure import AzureSite

            assert isinstance(site, AzureSite) and isinstance(config, AzureSiteConfig)
            # The peer's address of each connection: that of the connection's first tunnel.
            connection_peers = [peers[next(t.index for t in link.tunnels if t.connection == c)] for c in link.connections]
            return build_azure_end(site_stem, link, site, config.location, connection_peers, keys, opts, after=after)[-1]
        from resinfra.mesh.gcp import build_gcp_end
        from resinfra.sites.gcp import GcpSite

        assert isinstance(site, GcpSite) and isinstance(config, GcpSiteConfig)
        build_gcp_end(site_stem, link, site, config.region, peers, keys, classic, opts)
        return None

    @staticmethod
    def _describe(
        links: Sequence[LinkPlan],
        link: LinkPlan,
        site_name: str,
        site: SiteComponent,
        classic: ClassicGateway | None,
        locals_: list[pulumi.Output[str]],
        peers: list[pulumi.Output[str]],
        psks: list[pulumi.Output[str]],
    ) -> pulumi.Output[str]:
        count = len(link.tunnels)
        gateway_ips = list(site.gateway.public_ips)
        classic_ip: pulumi.Input[str] = classic.address.address if classic is not None else ""
        managed = site_gateway_values(site, links)

        def render(values: list[str]) -> str:
            tunnels = [TunnelValues(t.index, values[i], values[count + i], values[2 * count + i]) for i, t in enumerate(link.tunnels)]
            public = values[3 * count : 3 * count + len(gateway_ips)]
            gateway = dataclasses.replace(managed, public_addresses=public, classic_address=values[-1] or None)
            return to_json(describe_managed_end(link, site_name, tunnels, gateway))

        return pulumi.Output.secret(pulumi.Output.all(*locals_, *peers, *psks, *gateway_ips, classic_ip).apply(render))


def site_gateway_values(site: SiteComponent, links: Sequence[LinkPlan]) -> GatewayValues:
    """What a managed gateway's description needs beyond its addresses (resolved in ``_describe``)."""
    if site.gateway.kind is GatewayKind.AZURE_VNET_GATEWAY:
        custom = azure_bgp_addresses(list(links), site.site_name, len(site.gateway.public_ips))
        return GatewayValues((), [str(site.addresses.block)], custom_bgp_addresses=custom)
    from resinfra.sites.gcp import ROUTER_ADVERTISE_MODE, ROUTER_KEEPALIVE_SECONDS

    return GatewayValues((), [str(site.addresses.subnet)], advertise_mode=ROUTER_ADVERTISE_MODE, keepalive_seconds=ROUTER_KEEPALIVE_SECONDS)


def gateway_files(swanctl: str, interfaces: Sequence[XfrmInterface], paired: bool = False) -> list[FileToPush]:
    """What a strongSwan gateway gets: its swanctl.conf, and the XFRM interfaces of its route-based tunnels. A pair's
    VMs get the tunnels outside ``/etc/swanctl/conf.d``: the active one loads them (``FailoverLayout.swanctl_file``)."""
    files = [FileToPush(FailoverLayout().swanctl_file if paired else SWANCTL_PATH, swanctl, "0600")]
    if interfaces:
        files += [FileToPush(XFRM_SCRIPT_PATH, render_xfrm_script(interfaces), "0755"), FileToPush(XFRM_UNIT_PATH, render_xfrm_unit())]
    return files


def reload_commands(route_based: bool, paired: bool = False) -> tuple[str, ...]:
    """After the files: the XFRM interfaces (when there are route-based tunnels) exist before charon loads the tunnels.
    A pair's VM reloads them only while it is the active one (its failover script knows; it may not be installed yet,
    and then the first election loads them)."""
    commands = RELOAD_COMMANDS
    if paired:
        layout = FailoverLayout()
        commands = (*RELOAD_COMMANDS[:-1], f"test ! -x {layout.script} || {layout.script} {layout.env_file} reload")
    if not route_based:
        return commands
    xfrm = ("systemctl daemon-reload", f"systemctl enable {XFRM_UNIT}", f"systemctl restart {XFRM_UNIT}")
    return (commands[0], *xfrm, *commands[1:])
