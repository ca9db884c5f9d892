"""The ``GatewayPair`` component: keepalived, the notify script and its settings pushed to both VMs of a pair."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command

from resinfra.failover.plan import FailoverLayout, GatewayFailover, HetznerPair, pair_failover
from resinfra.remote import SshAccess, push_files
from resinfra.render.failover import failover_files, reload_commands
from resinfra.render.push_script import WAIT_FOR_CLOUD_INIT, FileToPush
from resinfra.sites.base import SiteComponent

TYPE_TOKEN = "resinfra:failover:GatewayPair"


@dataclass(frozen=True)
class GatewayPairArgs:
    site: SiteComponent
    """A Hetzner or Proxmox site with ``gateways: 2``."""
    supernet: str
    ssh: SshAccess
    public_prefix: int | None = None
    """The prefix length of a Proxmox site's public range (its VRRP address's)."""
    token: pulumi.Output[str] | None = None
    """``resinfra:hetznerFailoverToken`` (secret), for a Hetzner pair."""


class GatewayPair(pulumi.ComponentResource):
    """A site's two gateway VMs failing over to each other: each gets its keepalived.conf, the notify script, its
    settings and (Hetzner) the API token, pushed after first boot and again whenever they change or the VM is replaced."""

    failovers: pulumi.Output[tuple[GatewayFailover, GatewayFailover]]
    """The two VMs' failover settings (for ``resinfra render`` and the lab)."""

    def __init__(self, name: str, args: GatewayPairArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        site = args.site
        members = site.gateway_nodes
        if site.addresses.pair is None or len(members) != 2:
            raise ValueError(f"{site.site_name} has no gateway pair")
        ids = site.hetzner_pair
        if ids is not None:
            values = pulumi.Output.all(ids.floating_ip, ids.floating_ip_id, ids.network_id, *ids.server_ids, *ids.public_ips)
            self.failovers = values.apply(
                lambda v: pair_failover(
                    site.site_name,
                    site.addresses,
                    args.supernet,
                    hetzner=HetznerPair(v[0], int(v[1]), int(v[2]), (int(v[3]), int(v[4])), (v[5], v[6]), ids.routes),
                )
            )
        else:
            self.failovers = pulumi.Output.from_input(pair_failover(site.site_name, site.addresses, args.supernet, public_prefix=args.public_prefix))
        command_provider = pulumi_command.Provider(f"{name}-command", opts=pulumi.ResourceOptions(parent=self))
        token: pulumi.Output[str | None] = args.token if args.token is not None else pulumi.Output.from_input(None)
        for index, node in enumerate(members):
            files: pulumi.Output[list[FileToPush]] = pulumi.Output.all(self.failovers, token).apply(lambda v, i=index: failover_files(v[0][i], v[1]))
            push_files(
                f"{node.name}-failover",
                node,
                files,
                reload_commands(FailoverLayout()),
                args.ssh,
                pulumi.ResourceOptions(parent=self, provider=command_provider),
                # keepalived comes with the gateway role's packages (images/provision/gateway.sh): wait for them.
                before=[WAIT_FOR_CLOUD_INIT],
            )
        self.register_outputs({"gateways": [n.name for n in members]})
