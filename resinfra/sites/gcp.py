"""GCP site: VPC network and subnet, firewall rules, workers, HA VPN gateway and Cloud Router."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from pulumi_gcp import compute

from resinfra.addressing import Role
from resinfra.config import GcpSite as GcpSiteConfig
from resinfra.config import Provider
from resinfra.exposure import IngressRule, Protocol, ingress_rules
from resinfra.naming import child_name
from resinfra.sites.base import GatewayEndpoint, GatewayKind, SiteArgs, SiteComponent

TYPE_TOKEN = "resinfra:sites:GcpSite"
BOOT_DISK_GB = 20


def credentials_from_config() -> pulumi.Output[str] | None:
    """Explicit providers do not read the ``gcp:`` namespace: pass its credentials on.

    ``gcp:credentials`` (secret, a service account key JSON) is optional: without it the
    provider uses Application Default Credentials.
    """
    return pulumi.Config("gcp").get_secret("credentials")


@dataclass(frozen=True, kw_only=True)
class GcpSiteArgs(SiteArgs):
    site: GcpSiteConfig
    credentials: pulumi.Output[str] | None
    """``gcp:credentials`` (see :func:`credentials_from_config`)."""


def firewall_allowed(rule: IngressRule) -> list[compute.FirewallAllowArgs]:
    """GCP firewall ``allow`` blocks for one rule."""
    if rule.protocol is Protocol.ANY:
        return [compute.FirewallAllowArgs(protocol="all")]
    ports = [str(rule.port)] if rule.port is not None else None
    return [compute.FirewallAllowArgs(protocol=rule.protocol.value, ports=ports)]


ROUTER_ADVERTISE_MODE = "DEFAULT"
"""Cloud Router advertises the VPC's subnets (in its region, with regional dynamic routing)
and nothing it learned: GCP never re-advertises Azure's routes to anyone."""
ROUTER_KEEPALIVE_SECONDS = 60
"""Azure's VPN gateway keeps fixed BGP timers, keepalive 60 s and hold 180 s, and does not
negotiate them down (Microsoft Tech Community, "Azure VPN Gateway BGP Timer Mismatches", and
the VPN Gateway FAQ it updated); Cloud Router's default keepalive of 20 s proposes a 60 s hold,
BGP takes the smaller, and Azure's keepalives every 60 s would leave the session at the edge
of expiring. 60 s (the most Cloud Router allows: pulumi-gcp ``RouterBgpArgs.keepalive_interval``,
"between 20 and 60") gives both ends 180 s."""


class GcpSite(SiteComponent):
    """A site on Google Cloud: one VPC, one regional subnet, workers and an HA VPN gateway."""

    network: compute.Network
    """The site's VPC network."""
    ha_vpn_gateway: compute.HaVpnGateway
    """HA VPN gateway; its two interface addresses are the site's gateway endpoints."""
    router: compute.Router
    """Cloud Router that speaks BGP for the HA VPN tunnels."""
    provider: gcp.Provider

    def __init__(self, name: str, args: GcpSiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        site = args.site
        self.site_name = site.name
        self.provider_kind = Provider.GCP
        self.addresses = args.addresses
        self.labels = dict(args.labels)
        self.nodes = []

        self.provider = gcp.Provider(
            child_name(name, "provider"),
            project=site.project,
            region=site.region,
            zone=site.zone,
            default_labels=dict(args.labels),
            credentials=args.credentials,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)

        self.network = compute.Network(
            child_name(name, "net"),
            name=child_name(name, "net"),
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=child,
        )
        subnet = compute.Subnetwork(
            child_name(name, "subnet"),
            name=child_name(name, "subnet"),
            region=site.region,
            network=self.network.id,
            ip_cidr_range=str(args.addresses.subnet),
            private_ip_google_access=True,
            opts=child,
        )
        # Rules apply to the whole network: every machine here is a worker or the tooling
        # VM, and they accept the same traffic. GCP denies all other ingress implicitly.
        for rule in ingress_rules(args.stack, Role.WORKER):
            compute.Firewall(
                child_name(name, f"fw-{rule.name}"),
                name=child_name(name, f"fw-{rule.name}"),
                network=self.network.id,
                direction="INGRESS",
                source_ranges=list(rule.sources),
                allows=firewall_allowed(rule),
                description=rule.description,
                opts=child,
            )

        for machine in args.addresses.machines:
            # Workers get an ephemeral public address (admin SSH, package downloads); the
            # tooling VM a reserved one, so operators' SSH tunnels keep working.
            access = compute.InstanceNetworkInterfaceAccessConfigArgs()
            if machine.role is Role.TOOLING:
                static_ip = compute.Address(
                    child_name(name, f"{self.machine_suffix(name, machine)}-ip"),
                    name=child_name(name, f"{self.machine_suffix(name, machine)}-ip"),
                    region=site.region,
                    address_type="EXTERNAL",
                    opts=child,
                )
                access = compute.InstanceNetworkInterfaceAccessConfigArgs(nat_ip=static_ip.address)
            size = args.tooling_size if machine.role is Role.TOOLING and args.tooling_size else site.machine_type
            instance = compute.Instance(
                machine.name,
                name=machine.name,
                zone=site.zone,
                machine_type=size,
                boot_disk=compute.InstanceBootDiskArgs(
                    initialize_params=compute.InstanceBootDiskInitializeParamsArgs(
                        # A stock image, an override, or an image family (its newest image when the VM is created).
                        image=args.images[machine.role].reference,
                        size=BOOT_DISK_GB,
                        type="pd-balanced",
                    ),
                ),
                network_interfaces=[
                    compute.InstanceNetworkInterfaceArgs(
                        subnetwork=subnet.id,
                        network_ip=str(machine.private_ip),
                        access_configs=[access],
                    )
                ],
                metadata={
                    "user-data": args.user_data[machine.name],
                    # Only the key cloud-init installs: no project-wide keys, no OS Login.
                    "block-project-ssh-keys": "true",
                    "enable-oslogin": "false",
                },
                labels=dict(args.role_labels[machine.role]),
                shielded_instance_config=compute.InstanceShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
                ),
                allow_stopping_for_update=True,
                # Fixed name and private address: the old VM must go before its replacement. GCE would
                # update the metadata in place, but cloud-init reads user-data at first boot only: a
                # changed user-data means a new VM, as on Hetzner and Azure. Only the user-data: keys
                # others add (`gcloud compute ssh` adds ssh-keys) must never replace a VM after a refresh.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True, replace_on_changes=['metadata["user-data"]'])),
            )
            public_ip = instance.network_interfaces.apply(lambda nics: nics[0].access_configs[0].nat_ip if nics and nics[0].access_configs else None)
            self.node(machine, public_ip.apply(lambda ip: ip or ""), instance)

        self.ha_vpn_gateway = compute.HaVpnGateway(
            child_name(name, "vpn-gw"),
            name=child_name(name, "vpn-gw"),
            region=site.region,
            network=self.network.id,
            stack_type="IPV4_ONLY",
            opts=child,
        )
        self.router = compute.Router(
            child_name(name, "router"),
            name=child_name(name, "router"),
            region=site.region,
            network=self.network.id,
            bgp=compute.RouterBgpArgs(asn=site.asn, advertise_mode=ROUTER_ADVERTISE_MODE, keepalive_interval=ROUTER_KEEPALIVE_SECONDS),
            opts=child,
        )
        interfaces = self.ha_vpn_gateway.vpn_interfaces
        self.gateway = GatewayEndpoint(
            kind=GatewayKind.GCP_HA_VPN,
            public_ips=tuple(interfaces.apply(lambda ifs, i=i: (ifs or [])[i].ip_address or "") for i in (0, 1)),
            inner_ip=None,
            asn=site.asn,
        )
        self._register_site_outputs()
