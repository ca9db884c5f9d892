"""Hetzner Cloud site: private network and subnet, routes to the other sites, firewalls, workers, strongSwan gateway VM
(or a pair sharing a Floating IP)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from resinfra.addressing import Role
from resinfra.config import HetznerSite as HetznerSiteConfig
from resinfra.config import Provider, is_rfc1918
from resinfra.exposure import IngressRule, Protocol, ingress_rules
from resinfra.images import ImageSource, RoleImage
from resinfra.naming import child_name
from resinfra.sites.base import GatewayEndpoint, GatewayKind, HetznerPairIds, SiteArgs, SiteComponent

TYPE_TOKEN = "resinfra:sites:HetznerSite"


def credentials_from_config() -> pulumi.Output[str] | None:
    """``hcloud:token`` (secret); without it the provider reads ``HCLOUD_TOKEN``."""
    return pulumi.Config("hcloud").get_secret("token")


@dataclass(frozen=True, kw_only=True)
class HetznerSiteArgs(SiteArgs):
    site: HetznerSiteConfig
    token: pulumi.Output[str] | None


def boot_image(image: RoleImage, provider: hcloud.Provider) -> pulumi.Input[str]:
    """The hcloud image a role's servers boot: a name or id, or the most recent snapshot matching a label selector.

    The selector is looked up at every preview and update: a newer matching snapshot
    replaces the role's servers at the next ``pulumi up`` (pin a build with the site's
    ``images.selector``).
    """
    if image.source is ImageSource.HCLOUD_SELECTOR:
        found = hcloud.get_image_output(with_selector=image.reference, most_recent=True, opts=pulumi.InvokeOutputOptions(provider=provider))
        return found.id.apply(str)
    return image.reference


def firewall_rules(rules: list[IngressRule]) -> list[hcloud.FirewallRuleArgs]:
    """hcloud firewall rules for ``rules``.

    Hetzner firewalls filter only the public interface; the private network is not
    filtered, so rules whose sources are all private ranges are left out.
    """
    out = []
    for rule in rules:
        if all(is_rfc1918(s) for s in rule.sources):
            continue
        if not rule.accept:
            raise ValueError(f"rule {rule.name}: hcloud firewalls only allow; a public drop rule cannot be built")
        if rule.protocol is Protocol.ANY:
            raise ValueError(f"rule {rule.name}: hcloud firewalls need a protocol for public sources")
        out.append(
            hcloud.FirewallRuleArgs(
                direction="in",
                protocol=rule.protocol.value,
                port=str(rule.port) if rule.port is not None else None,
                source_ips=list(rule.sources),
                description=rule.description,
            )
        )
    return out


class HetznerSite(SiteComponent):
    """A site on Hetzner Cloud: a network spanning the supernet, one subnet, workers and a strongSwan gateway VM, or two
    that share a Floating IP (``gateways: 2``)."""

    network: hcloud.Network
    gateway_servers: list[hcloud.Server]
    gateway_ips: list[hcloud.PrimaryIp]
    """Each gateway's own public address resource: known before any tunnel is declared."""
    floating_ip: hcloud.FloatingIp | None
    """A pair's shared public address: what every peer is configured with; the active gateway assigns it to itself."""
    provider: hcloud.Provider

    def __init__(self, name: str, args: HetznerSiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        site = args.site
        plan = args.addresses
        assert plan.gateway_vms, "Hetzner sites run a gateway VM"
        self.site_name = site.name
        self.provider_kind = Provider.HETZNER
        self.addresses = plan
        self.labels = dict(args.labels)
        self.nodes = []

        self.provider = hcloud.Provider(child_name(name, "provider"), token=args.token, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        labels = dict(args.labels)

        ssh_key = hcloud.SshKey(
            child_name(name, "admin-key"), name=child_name(name, "admin-key"), public_key=args.stack.ssh_public_key, labels=labels, opts=child
        )
        # The network spans the whole supernet: servers get a route for it via the network's
        # router, which forwards other sites' blocks to the gateway VM (routes below).
        self.network = hcloud.Network(child_name(name, "net"), name=child_name(name, "net"), ip_range=args.stack.supernet, labels=labels, opts=child)
        network_id = self.network.id.apply(int)
        subnet = hcloud.NetworkSubnet(
            child_name(name, "subnet"),
            network_id=network_id,
            type="cloud",
            network_zone=site.network_zone,
            ip_range=str(plan.subnet),
            opts=child,
        )
        # A pair's active gateway points the routes at itself through the API (the failover), so the program only
        # creates them: terraform-provider-hcloud reads a route's gateway back from the API and, the field being ForceNew
        # (internal/network/resource_route.go), a refresh after a failover would otherwise plan to put it back.
        route_opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=["gateway"])) if plan.pair else child
        for remote_site, block in plan.remote_blocks.items():
            hcloud.NetworkRoute(
                f"{name}-route-{remote_site}",
                network_id=network_id,
                destination=str(block),
                gateway=str(plan.gateway_vms[0].private_ip),
                opts=route_opts,
            )

        firewalls = {
            role: hcloud.Firewall(
                child_name(name, f"fw-{role.value}"),
                name=child_name(name, f"fw-{role.value}"),
                rules=firewall_rules(ingress_rules(args.stack, role)),
                labels=labels,
                opts=child,
            )
            for role in dict.fromkeys(m.role for m in plan.machines)
        }
        server_opts = pulumi.ResourceOptions.merge(
            child,
            # Fixed name and private address: the old server must go before its replacement.
            pulumi.ResourceOptions(depends_on=[subnet], delete_before_replace=True),
        )
        sizes = {Role.GATEWAY: site.gateway_server_type, Role.TOOLING: args.tooling_size}
        role_images = {role: boot_image(args.images[role], self.provider) for role in dict.fromkeys(m.role for m in plan.machines)}

        self.gateway_servers, self.gateway_ips, self.floating_ip = [], [], None
        for machine in plan.machines:
            public_net = hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=False)
            primary_ip = None
            if machine.role is not Role.WORKER:
                # The gateway's and the tooling VM's addresses are their own resources:
                # known before any tunnel is declared, and kept when the server is replaced.
                primary_ip = hcloud.PrimaryIp(
                    child_name(name, f"{self.machine_suffix(name, machine)}-ip"),
                    name=child_name(name, f"{self.machine_suffix(name, machine)}-ip"),
                    type="ipv4",
                    assignee_type="server",
                    location=site.location,
                    auto_delete=False,
                    labels=labels,
                    opts=child,
                )
                public_net = hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv4=primary_ip.id.apply(int), ipv6_enabled=False)
            server = hcloud.Server(
                machine.name,
                name=machine.name,
                server_type=sizes.get(machine.role) or site.server_type,
                image=role_images[machine.role],
                location=site.location,
                ssh_keys=[ssh_key.id],
                user_data=args.user_data[machine.name],
                networks=[hcloud.ServerNetworkArgs(network_id=network_id, ip=str(machine.private_ip))],
                public_nets=[public_net],
                firewall_ids=[firewalls[machine.role].id.apply(int)],
                labels=dict(args.role_labels[machine.role]),
                opts=server_opts,
            )
            self.node(machine, primary_ip.ip_address if primary_ip else server.ipv4_address, server)
            if machine.role is Role.GATEWAY:
                assert primary_ip is not None
                self.gateway_servers.append(server)
                self.gateway_ips.append(primary_ip)

        public = self.gateway_ips[0].ip_address
        if plan.pair is not None:
            # Created unassigned: the pair's active gateway assigns it to itself (the failover), and the program never
            # sets server_id, which terraform-provider-hcloud keeps Optional+Computed (internal/floatingip/resource.go):
            # wherever the API says it is, the program plans no change.
            self.floating_ip = hcloud.FloatingIp(
                child_name(name, "gw-fip"),
                name=child_name(name, "gw-fip"),
                type="ipv4",
                home_location=site.location,
                description=f"the gateway pair of {site.name}: every peer's tunnels end here",
                labels=labels,
                opts=child,
            )
            public = self.floating_ip.ip_address
            first, second = self.gateway_servers
            self.hetzner_pair = HetznerPairIds(
                floating_ip=self.floating_ip.ip_address,
                floating_ip_id=self.floating_ip.id.apply(int),
                network_id=network_id,
                server_ids=(first.id.apply(int), second.id.apply(int)),
                public_ips=(self.gateway_ips[0].ip_address, self.gateway_ips[1].ip_address),
                routes=tuple(str(b) for b in plan.remote_blocks.values()),
            )
        self.gateway = GatewayEndpoint(
            kind=GatewayKind.STRONGSWAN,
            public_ips=(public,),
            inner_ip=str(plan.gateway_vm.private_ip) if plan.gateway_vm is not None else None,
            asn=None,
            paired=plan.pair is not None,
        )
        self._register_site_outputs()
