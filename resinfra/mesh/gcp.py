"""GCP end of a link: HA VPN tunnels with Cloud Router BGP to Azure; Classic VPN tunnels
with static routes and traffic selectors to strongSwan gateways."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute

from resinfra.mesh import crypto
from resinfra.mesh.describe import traffic_selectors
from resinfra.mesh.plan import LinkPlan, Routing, gcp_static_routes
from resinfra.naming import child_name, mesh_name
from resinfra.sites.gcp import GcpSite

EXTERNAL_GATEWAY_REDUNDANCY = {1: "SINGLE_IP_INTERNALLY_REDUNDANT", 2: "TWO_IPS_REDUNDANCY"}
CLASSIC_VPN_PORTS = (("esp", "ESP", None), ("udp500", "UDP", "500"), ("udp4500", "UDP", "4500"))
"""Forwarding rules a Classic VPN gateway needs: ESP, IKE, NAT-T."""


def cipher_suite(policy: crypto.CryptoPolicy) -> compute.VPNTunnelCipherSuiteArgs:
    """The tunnel's pinned ciphers (one per role: Cloud VPN then never picks another)."""
    suite = crypto.gcp_cipher_suite(policy)
    p1, p2 = suite["phase1"], suite["phase2"]
    return compute.VPNTunnelCipherSuiteArgs(
        phase1=compute.VPNTunnelCipherSuitePhase1Args(encryptions=p1["encryptions"], prves=p1["prves"], dhs=p1["dhs"]),
        phase2=compute.VPNTunnelCipherSuitePhase2Args(encryptions=p2["encryptions"], pfs=p2["pfs"]),
    )


@dataclass(frozen=True)
class ClassicGateway:
    """A GCP site's Classic VPN gateway for its strongSwan peers (one per site, shared)."""

    address: compute.Address
    gateway: compute.VPNGateway
    rules: list[compute.ForwardingRule]


def build_classic_gateway(site_stem: str, site: GcpSite, region: str, opts: pulumi.ResourceOptions) -> ClassicGateway:
    """Static external address, target VPN gateway and its ESP/IKE/NAT-T forwarding rules."""
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=site.provider))
    address = compute.Address(child_name(site_stem, "cvpn-ip"), name=child_name(site_stem, "cvpn-ip"), region=region, address_type="EXTERNAL", opts=child)
    gateway = compute.VPNGateway(child_name(site_stem, "cvpn"), name=child_name(site_stem, "cvpn"), region=region, network=site.network.id, opts=child)
    rules = [
        compute.ForwardingRule(
            child_name(site_stem, f"cvpn-{suffix}"),
            name=child_name(site_stem, f"cvpn-{suffix}"),
            region=region,
            ip_protocol=protocol,
            port_range=port,
            ip_address=address.address,
            target=gateway.id,
            opts=child,
        )
        for suffix, protocol, port in CLASSIC_VPN_PORTS
    ]
    return ClassicGateway(address, gateway, rules)


def build_gcp_end(
    site_stem: str,
    link: LinkPlan,
    site: GcpSite,
    region: str,
    peer_addresses: Sequence[pulumi.Input[str]],
    psks: Sequence[pulumi.Output[str]],
    classic: ClassicGateway | None,
    opts: pulumi.ResourceOptions,
) -> list[compute.VPNTunnel]:
    """Declare ``site``'s end of ``link`` and return its tunnels.

    + peer_addresses: the peer's address of each tunnel; psks: one per connection

    BGP (Azure): an external VPN gateway with Azure's address(es), an HA VPN tunnel per
    tunnel on interface ``i``, a Cloud Router interface on the tunnel's APIPA /30 and a BGP
    peer with Azure's ASN and address. Static (strongSwan): a Classic VPN tunnel with the
    two site blocks as traffic selectors and routes for the two halves of the peer's block
    (``plan.gcp_static_routes`` says why halves).
    """
    peer = link.peer(site.site_name)
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=site.provider))
    tunnels = []
    if link.routing is Routing.BGP:
        external = compute.ExternalVpnGateway(
            mesh_name(site_stem, "peer", peer.site),
            name=mesh_name(site_stem, "peer", peer.site),
            redundancy_type=EXTERNAL_GATEWAY_REDUNDANCY[len(peer_addresses)],
            interfaces=[compute.ExternalVpnGatewayInterfaceArgs(id=i, ip_address=address) for i, address in enumerate(peer_addresses)],
            description=f"{peer.site}'s VPN gateway",
            opts=child,
        )
        for tunnel in link.tunnels:
            assert tunnel.bgp is not None
            psk = psks[tunnel.connection]
            vpn_tunnel = compute.VPNTunnel(
                mesh_name(site_stem, "tun", peer.site, tunnel.index),
                name=mesh_name(site_stem, "tun", peer.site, tunnel.index),
                region=region,
                vpn_gateway=site.ha_vpn_gateway.id,
                vpn_gateway_interface=tunnel.index,
                peer_external_gateway=external.id,
                peer_external_gateway_interface=tunnel.index,
                router=site.router.id,
                ike_version=crypto.IKE_VERSION,
                shared_secret=psk,
                cipher_suite=cipher_suite(link.crypto),
                opts=child,
            )
            interface = compute.RouterInterface(
                mesh_name(site_stem, "if", peer.site, tunnel.index),
                name=mesh_name(site_stem, "if", peer.site, tunnel.index),
                region=region,
                router=site.router.name,
                ip_range=f"{link.bgp_address(tunnel, site.site_name)}/{tunnel.bgp.network.prefixlen}",
                vpn_tunnel=vpn_tunnel.name,
                opts=child,
            )
            compute.RouterPeer(
                mesh_name(site_stem, "bgp", peer.site, tunnel.index),
                name=mesh_name(site_stem, "bgp", peer.site, tunnel.index),
                region=region,
                router=site.router.name,
                interface=interface.name,
                ip_address=str(link.bgp_address(tunnel, site.site_name)),
                peer_ip_address=str(link.bgp_address(tunnel, peer.site)),
                peer_asn=peer.asn,
                opts=child,
            )
            tunnels.append(vpn_tunnel)
        return tunnels

    assert classic is not None, "static links to GCP go through the site's Classic VPN gateway"
    local_ts, remote_ts = traffic_selectors(link, site.site_name)
    routes = gcp_static_routes(link, site.site_name)
    for tunnel, peer_address in zip(link.tunnels, peer_addresses, strict=True):
        vpn_tunnel = compute.VPNTunnel(
            mesh_name(site_stem, "tun", peer.site, tunnel.index),
            name=mesh_name(site_stem, "tun", peer.site, tunnel.index),
            region=region,
            target_vpn_gateway=classic.gateway.id,
            peer_ip=peer_address,
            ike_version=crypto.IKE_VERSION,
            shared_secret=psks[tunnel.connection],
            cipher_suite=cipher_suite(link.crypto),
            local_traffic_selectors=local_ts,
            remote_traffic_selectors=remote_ts,
            # The gateway must receive ESP and IKE before a tunnel can use it.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=list(classic.rules))),
        )
        for route in (r for r in routes if r.tunnel == tunnel.index):
            compute.Route(
                mesh_name(site_stem, "rt", peer.site, route.half),
                name=mesh_name(site_stem, "rt", peer.site, route.half),
                network=site.network.id,
                dest_range=str(route.destination),
                next_hop_vpn_tunnel=vpn_tunnel.id,
                priority=route.priority,
                # A route has no update: every field forces a new one (terraform-provider-google
                # resource_compute_route.go: no Update, all ForceNew) and its name is fixed, so
                # the old route must go first or the new one's name is taken.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
            )
        tunnels.append(vpn_tunnel)
    return tunnels
