"""The common Site interface the mesh and the tooling consume, and the args every site component shares."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

from resinfra.addressing import NodeAddress, Role, SiteAddresses
from resinfra.config import Provider, StackConfig
from resinfra.images import RoleImage

UBUNTU_RELEASE = "24.04"
"""Stock OS everywhere: the one LTS whose images carry cloud-init on all four providers
(Debian's GCE images have no cloud-init)."""


class GatewayKind(enum.StrEnum):
    """Who runs a site's VPN gateway."""

    AZURE_VNET_GATEWAY = "azure-vnet-gateway"
    GCP_HA_VPN = "gcp-ha-vpn"
    STRONGSWAN = "strongswan"


@dataclass(frozen=True)
class Node:
    """A machine the program created."""

    name: str
    site: str
    provider: Provider
    role: Role
    private_ip: str
    public_ip: pulumi.Output[str]
    resource: pulumi.CustomResource
    """The VM resource: the target of ``pulumi up --replace``."""

    @property
    def urn(self) -> pulumi.Output[str]:
        return self.resource.urn


@dataclass(frozen=True)
class GatewayEndpoint:
    """A site's VPN gateway as its peers see it."""

    kind: GatewayKind
    public_ips: tuple[pulumi.Output[str], ...]
    """One address, or two for GCP HA VPN and Azure active-active."""
    inner_ip: str | None
    """Private address of a strongSwan gateway VM (a Proxmox pair's VRRP address); None for managed gateways and a
    Hetzner pair (its network routes point at the active VM)."""
    asn: int | None
    """BGP ASN of a managed gateway."""
    paired: bool = False
    """Two strongSwan VMs share this endpoint (``gateways: 2``): the public address moves to the active one."""


@dataclass(frozen=True)
class HetznerPairIds:
    """The cloud resources a Hetzner gateway pair moves through the API, as the failover needs them."""

    floating_ip: pulumi.Output[str]
    floating_ip_id: pulumi.Output[int]
    network_id: pulumi.Output[int]
    server_ids: tuple[pulumi.Output[int], pulumi.Output[int]]
    public_ips: tuple[pulumi.Output[str], pulumi.Output[str]]
    """Each VM's own Primary IP."""
    routes: tuple[str, ...]
    """The network routes' destinations: every other site's block."""


@dataclass(frozen=True, kw_only=True)
class SiteArgs:
    """What every site component is built from."""

    stack: StackConfig
    addresses: SiteAddresses
    user_data: Mapping[str, str]
    """Rendered cloud-init user-data by machine name."""
    images: Mapping[Role, RoleImage]
    """The image each role's machines boot (stock, Packer-built or an override)."""
    labels: Mapping[str, str]
    """Labels or tags for every resource of the site that supports them."""
    role_labels: Mapping[Role, Mapping[str, str]] = field(default_factory=dict)
    """Labels per machine role (``labels`` plus the role)."""
    tooling_size: str | None = None
    """Size of the tooling VM when this site hosts it; the site's worker size when None."""


class SiteComponent(pulumi.ComponentResource):
    """Base of the four site components: the Site interface they all provide."""

    site_name: str
    provider_kind: Provider
    addresses: SiteAddresses
    gateway: GatewayEndpoint
    nodes: list[Node]
    labels: dict[str, str]
    """Labels/tags of the site's resources; resources other components add to the site carry them too."""
    hetzner_pair: HetznerPairIds | None = None
    """A Hetzner site's gateway pair's cloud resources (``gateways: 2``)."""

    @property
    def gateway_nodes(self) -> list[Node]:
        """The site's strongSwan gateway VM(s): none, one, or a pair."""
        return [n for n in self.nodes if n.role is Role.GATEWAY]

    def _register_site_outputs(self) -> None:
        """Register the interface as this component's outputs (keys mirror the attributes)."""
        self.register_outputs(
            {
                "siteName": self.site_name,
                "provider": self.provider_kind.value,
                "subnet": str(self.addresses.subnet),
                "gatewayKind": self.gateway.kind.value,
                "gatewayPublicIps": list(self.gateway.public_ips),
                "nodes": [n.name for n in self.nodes],
            }
        )

    @staticmethod
    def machine_suffix(component_name: str, machine: NodeAddress) -> str:
        """A machine's name without the site stem (``worker-2``, ``gw``, ``tooling``), for child names."""
        return machine.name.removeprefix(f"{component_name}-")

    def node(self, address: NodeAddress, public_ip: pulumi.Output[str], resource: pulumi.CustomResource) -> Node:
        """Record a machine of this site."""
        created = Node(
            name=address.name,
            site=self.site_name,
            provider=self.provider_kind,
            role=address.role,
            private_ip=str(address.private_ip),
            public_ip=public_ip,
            resource=resource,
        )
        self.nodes.append(created)
        return created
