"""Azure end of a link: a local network gateway and an IPsec connection per tunnel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi_azure_native import network

from resinfra.mesh import crypto
from resinfra.mesh.plan import LinkPlan, Routing, azure_connection_bgp_addresses
from resinfra.naming import mesh_name
from resinfra.sites.azure import AzureSite, ip_configuration_name


def ipsec_policy(policy: crypto.CryptoPolicy) -> network.IpsecPolicyArgs:
    """The custom IPsec/IKE policy (SDK enums, from the one crypto policy)."""
    values = crypto.azure_policy(policy)
    return network.IpsecPolicyArgs(
        ike_encryption=network.IkeEncryption(values["ikeEncryption"]),
        ike_integrity=network.IkeIntegrity(values["ikeIntegrity"]),
        dh_group=network.DhGroup(values["dhGroup"]),
        ipsec_encryption=network.IpsecEncryption(values["ipsecEncryption"]),
        ipsec_integrity=network.IpsecIntegrity(values["ipsecIntegrity"]),
        pfs_group=network.PfsGroup(values["pfsGroup"]),
        sa_life_time_seconds=int(values["saLifeTimeSeconds"]),
        sa_data_size_kilobytes=int(values["saDataSizeKilobytes"]),
    )


def build_azure_end(
    site_stem: str,
    link: LinkPlan,
    site: AzureSite,
    location: str,
    peer_addresses: Sequence[pulumi.Input[str]],
    psks: Sequence[pulumi.Output[str]],
    opts: pulumi.ResourceOptions,
    after: pulumi.Resource | None = None,
) -> list[network.VirtualNetworkGatewayConnection]:
    """Declare ``site``'s end of ``link``: per connection a local network gateway for the peer's
    address and a connection with the custom policy and the connection's PSK.

    + peer_addresses, psks: one per connection (``link.connections``)
    + after: the gateway's previous connection; each connection is created after it

    Static links carry the peer's block and policy-based traffic selectors (the two site
    blocks, mirroring the strongSwan end); BGP links carry the peer's ASN and APIPA address
    and set Azure's own APIPA address on the connection for every gateway instance (custom
    BGP addresses, natively). An active-active gateway brings up a tunnel from each instance
    for every connection (one connection to a strongSwan VM gives its two tunnels).

    Connections are chained: Azure serialises operations on a VNet gateway and answers a
    concurrent one with 409 AnotherOperationInProgress, which azure-native retries only as
    many times as azcore's default retry policy allows (three, 20 s to 120 s apart:
    pulumi-azure-native ``provider/pkg/azure/client_azcore.go``, ``shouldRetryConflict``;
    Azure Landing Zones issue #4134 shows a deployment failing on it). One after another,
    nothing races on the gateway; the chain also orders their deletion in reverse.
    """
    peer = link.peer(site.site_name)
    rg_name = site.resource_group.name
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=site.provider))
    instances = len(site.gateway.public_ips)
    connections = []
    for connection, peer_address, psk in zip(link.connections, peer_addresses, psks, strict=True):
        tunnels = [t for t in link.tunnels if t.connection == connection]
        bgp: dict[str, Any] = {}
        lng_args: dict[str, Any] = {}
        if link.routing is Routing.BGP:
            (tunnel,) = tunnels  # one tunnel per GCP interface, so per connection
            lng_args["bgp_settings"] = network.BgpSettingsArgs(asn=peer.asn, bgp_peering_address=str(link.bgp_address(tunnel, peer.site)))
            bgp = {"enable_bgp": True, "gateway_custom_bgp_ip_addresses": custom_bgp_addresses(link, site, instances)}
        else:
            lng_args["local_network_address_space"] = network.AddressSpaceArgs(address_prefixes=[str(peer.block)])
            bgp = {"enable_bgp": False, "use_policy_based_traffic_selectors": True}
        lng_name = mesh_name(site_stem, "lng", peer.site, connection)
        lng = network.LocalNetworkGateway(
            lng_name,
            local_network_gateway_name=lng_name,
            resource_group_name=rg_name,
            location=location,
            gateway_ip_address=peer_address,
            tags=site.labels,
            opts=child,
            **lng_args,
        )
        conn_name = mesh_name(site_stem, "conn", peer.site, connection)
        ordered = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[after] if after is not None else []))
        after = network.VirtualNetworkGatewayConnection(
            conn_name,
            virtual_network_gateway_connection_name=conn_name,
            resource_group_name=rg_name,
            location=location,
            connection_type=network.VirtualNetworkGatewayConnectionType.IPSEC,
            connection_protocol=network.VirtualNetworkGatewayConnectionProtocol.IK_EV2,
            virtual_network_gateway1=network.VirtualNetworkGatewayArgs(id=site.vnet_gateway.id),
            local_network_gateway2=network.LocalNetworkGatewayArgs(id=lng.id),
            shared_key=psk,
            ipsec_policies=[ipsec_policy(link.crypto)],
            dpd_timeout_seconds=crypto.DPD_TIMEOUT_SECONDS,
            tags=site.labels,
            opts=ordered,
            **bgp,
        )
        connections.append(after)
    return connections


def custom_bgp_addresses(link: LinkPlan, site: AzureSite, instances: int) -> list[network.GatewayCustomBgpIpAddressIpConfigurationArgs]:
    """Azure's own APIPA address on every gateway instance (IP configuration), for a BGP link's connection."""
    return [
        network.GatewayCustomBgpIpAddressIpConfigurationArgs(
            ip_configuration_id=pulumi.Output.concat(site.vnet_gateway.id, "/ipConfigurations/", ip_configuration_name(instance)),
            custom_bgp_ip_address=str(address),
        )
        for instance, address in azure_connection_bgp_addresses(link, site.site_name, instances)
    ]
