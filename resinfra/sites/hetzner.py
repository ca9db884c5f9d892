"""Hetzner Cloud site: private network and subnet, routes to the other sites, firewalls, workers, strongSwan gateway VM."""

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
from resinfra.sites.base import GatewayEndpoint, GatewayKind, SiteArgs, SiteComponent

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
    """A site on Hetzner Cloud: a network spanning the supernet, one subnet, workers and a strongSwan gateway VM."""

    network: hcloud.Network
    gateway_server: hcloud.Server
    gateway_ip: hcloud.PrimaryIp
    """The gateway's own public address resource: known before any tunnel is declared."""
    provider: hcloud.Provider

    def __init__(self, name: str, args: HetznerSiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        site = args.site
        plan = args.addresses
        assert plan.gateway_vm is not None, "Hetzner sites run a gateway VM"
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
        for remote_site, block in plan.remote_blocks.items():
            hcloud.NetworkRoute(
                f"{name}-route-{remote_site}",
                network_id=network_id,
                destination=str(block),
                gateway=str(plan.gateway_vm.private_ip),
                opts=child,
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
                self.gateway_server, self.gateway_ip = server, primary_ip

        self.gateway = GatewayEndpoint(
            kind=GatewayKind.STRONGSWAN,
            public_ips=(self.gateway_ip.ip_address,),
            inner_ip=str(plan.gateway_vm.private_ip),
            asn=None,
        )
        self._register_site_outputs()
