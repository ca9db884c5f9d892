"""Azure site: resource group, VNet with worker subnet and GatewaySubnet, NSG, workers, route-based VNet gateway."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import authorization, compute, network, resources

from resinfra.addressing import Role
from resinfra.config import AzureSite as AzureSiteConfig
from resinfra.config import Provider
from resinfra.exposure import IngressRule, Protocol, ingress_rules
from resinfra.images import STOCK_IMAGES, ImageSource, RoleImage
from resinfra.naming import child_name
from resinfra.sites.base import GatewayEndpoint, GatewayKind, SiteArgs, SiteComponent

TYPE_TOKEN = "resinfra:sites:AzureSite"
GATEWAY_SUBNET_NAME = "GatewaySubnet"
"""Azure requires exactly this name for the subnet of a VNet gateway."""
NSG_FIRST_PRIORITY = 100
NSG_DENY_PRIORITY = 4096

NSG_PROTOCOLS = {
    Protocol.TCP: network.SecurityRuleProtocol.TCP,
    Protocol.UDP: network.SecurityRuleProtocol.UDP,
    Protocol.ESP: network.SecurityRuleProtocol.ESP,
    Protocol.ANY: network.SecurityRuleProtocol.ASTERISK,
}


@dataclass(frozen=True)
class AzureCredentials:
    """``azure-native:*`` values for the site's explicit provider; unset ones fall back to
    the provider's environment variables or the Azure CLI login."""

    subscription_id: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: pulumi.Output[str] | None = None
    use_oidc: bool | None = None


def credentials_from_config() -> AzureCredentials:
    """Read ``azure-native:subscriptionId``, ``tenantId``, ``clientId``, ``clientSecret`` (secret), ``useOidc``."""
    config = pulumi.Config("azure-native")
    return AzureCredentials(
        subscription_id=config.get("subscriptionId"),
        tenant_id=config.get("tenantId"),
        client_id=config.get("clientId"),
        client_secret=config.get_secret("clientSecret"),
        use_oidc=config.get_bool("useOidc"),
    )


@dataclass(frozen=True, kw_only=True)
class AzureSiteArgs(SiteArgs):
    site: AzureSiteConfig
    credentials: AzureCredentials
    custom_bgp_addresses: tuple[tuple[str, ...], ...] = ()
    """APIPA BGP addresses of each gateway instance (from the mesh plan): Azure only speaks
    BGP on them once they are set on the gateway's IP configurations."""


def image_reference(image: RoleImage, provider: azure_native.Provider) -> compute.ImageReferenceArgs:
    """The image a role's VMs boot: the stock Marketplace image, an image id, or the Packer-built
    managed image or gallery image definition, looked up by name (a missing one fails the preview)."""
    if image.source is ImageSource.STOCK:
        publisher, offer, sku, version = STOCK_IMAGES[Provider.AZURE].split(":")
        return compute.ImageReferenceArgs(publisher=publisher, offer=offer, sku=sku, version=version)
    opts = pulumi.InvokeOutputOptions(provider=provider)
    if image.source is ImageSource.AZURE_MANAGED_IMAGE:
        group, name = image.lookup
        return compute.ImageReferenceArgs(id=compute.get_image_output(resource_group_name=group, image_name=name, opts=opts).id)
    if image.source is ImageSource.AZURE_GALLERY_IMAGE:
        # The definition's id without a version: Azure boots its latest version when the VM is created.
        group, gallery, name = image.lookup
        found = compute.get_gallery_image_output(resource_group_name=group, gallery_name=gallery, gallery_image_name=name, opts=opts)
        return compute.ImageReferenceArgs(id=found.id)
    return compute.ImageReferenceArgs(id=image.reference)


VM_CREATE_ONLY_PROPERTIES = ("osProfile", "storageProfile.imageReference")
"""VM inputs Azure refuses to change in place ("Changing property 'customData' is not allowed",
PropertyChangeNotAllowed; the API reference: customData "cannot be updated after the VM is
created"). azure-native would plan an update that fails (pulumi-azure-native#577, #1117), so a
changed user-data, admin user, SSH key or image replaces the VM, as on Hetzner."""


GENERATION2_ONLY_SKUS = frozenset({"VpnGw4AZ", "VpnGw5AZ"})
"""SKUs Azure offers only as Generation2 gateways (learn.microsoft.com, "About VPN Gateway
configuration settings", table "Gateway SKUs by tunnel, connection, and throughput": VpnGw4(AZ)
and VpnGw5(AZ) appear only in Generation2 rows; VpnGw1(AZ) only in Generation1 rows)."""


def gateway_generation(sku: str) -> network.VpnGatewayGeneration:
    """The gateway generation ``sku`` exists in: Generation2 for VpnGw4AZ/5AZ, else Generation1
    (kept for VpnGw1AZ-3AZ, which Generation1 offers: existing gateways keep their generation)."""
    return network.VpnGatewayGeneration.GENERATION2 if sku in GENERATION2_ONLY_SKUS else network.VpnGatewayGeneration.GENERATION1


def ip_configuration_name(instance: int) -> str:
    """Name of the gateway's IP configuration for instance 0 or 1."""
    return f"ipconfig-{instance}"


def security_rules(rules: list[IngressRule]) -> list[network.SecurityRuleArgs]:
    """NSG rules for ``rules`` plus an explicit final deny of everything else inbound."""
    out = []
    for offset, rule in enumerate(rules):
        out.append(
            network.SecurityRuleArgs(
                name=f"allow-{rule.name}",
                description=rule.description,
                priority=NSG_FIRST_PRIORITY + 10 * offset,
                direction=network.SecurityRuleDirection.INBOUND,
                access=network.SecurityRuleAccess.ALLOW,
                protocol=NSG_PROTOCOLS[rule.protocol],
                source_address_prefixes=list(rule.sources),
                source_port_range="*",
                destination_address_prefix="*",
                destination_port_range=str(rule.port) if rule.port is not None else "*",
            )
        )
    # Azure's defaults also let in its load balancer probes; nothing here needs them.
    out.append(
        network.SecurityRuleArgs(
            name="deny-all-inbound",
            description="everything else",
            priority=NSG_DENY_PRIORITY,
            direction=network.SecurityRuleDirection.INBOUND,
            access=network.SecurityRuleAccess.DENY,
            protocol=network.SecurityRuleProtocol.ASTERISK,
            source_address_prefix="*",
            source_port_range="*",
            destination_address_prefix="*",
            destination_port_range="*",
        )
    )
    return out


class AzureSite(SiteComponent):
    """A site on Azure: one VNet, a worker subnet behind an NSG, workers and a VNet gateway with BGP."""

    resource_group: resources.ResourceGroup
    vnet: network.VirtualNetwork
    vnet_gateway: network.VirtualNetworkGateway
    """Route-based VPN gateway with BGP; its public address(es) are the site's endpoints."""
    provider: azure_native.Provider

    def __init__(self, name: str, args: AzureSiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        site = args.site
        creds = args.credentials
        self.site_name = site.name
        self.provider_kind = Provider.AZURE
        self.addresses = args.addresses
        self.labels = dict(args.labels)
        self.nodes = []

        self.provider = azure_native.Provider(
            child_name(name, "provider"),
            location=site.location,
            subscription_id=creds.subscription_id,
            tenant_id=creds.tenant_id,
            client_id=creds.client_id,
            client_secret=creds.client_secret,
            use_oidc=creds.use_oidc,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        tags = dict(args.labels)

        self.resource_group = resources.ResourceGroup(
            child_name(name, "rg"),
            resource_group_name=site.resource_group,
            location=site.location,
            tags=tags,
            opts=child,
        )
        rg_name = self.resource_group.name
        nsg = network.NetworkSecurityGroup(
            child_name(name, "nsg"),
            network_security_group_name=child_name(name, "nsg"),
            resource_group_name=rg_name,
            location=site.location,
            security_rules=security_rules(ingress_rules(args.stack, Role.WORKER)),
            tags=tags,
            opts=child,
        )
        self.vnet = network.VirtualNetwork(
            child_name(name, "vnet"),
            virtual_network_name=child_name(name, "vnet"),
            resource_group_name=rg_name,
            location=site.location,
            address_space=network.AddressSpaceArgs(address_prefixes=[str(args.addresses.block)]),
            tags=tags,
            opts=child,
        )
        subnet = network.Subnet(
            child_name(name, "subnet"),
            subnet_name=child_name(name, "subnet"),
            resource_group_name=rg_name,
            virtual_network_name=self.vnet.name,
            address_prefix=str(args.addresses.subnet),
            network_security_group=network.NetworkSecurityGroupArgs(id=nsg.id),
            opts=child,
        )
        # No NSG on GatewaySubnet: Azure does not support one there.
        gateway_subnet = network.Subnet(
            child_name(name, "gw-subnet"),
            subnet_name=GATEWAY_SUBNET_NAME,
            resource_group_name=rg_name,
            virtual_network_name=self.vnet.name,
            address_prefix=str(args.addresses.gateway_subnet),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[subnet])),
        )

        role_images = {role: image_reference(args.images[role], self.provider) for role in dict.fromkeys(m.role for m in args.addresses.machines)}
        for machine in args.addresses.machines:
            suffix = self.machine_suffix(name, machine)
            machine_ip = self._static_public_ip(child_name(name, f"{suffix}-pip"), site, rg_name, tags, zones=None, opts=child)
            nic = network.NetworkInterface(
                child_name(name, f"{suffix}-nic"),
                network_interface_name=child_name(name, f"{suffix}-nic"),
                resource_group_name=rg_name,
                location=site.location,
                ip_configurations=[
                    network.NetworkInterfaceIPConfigurationArgs(
                        name="primary",
                        primary=True,
                        subnet=network.SubnetArgs(id=subnet.id),
                        private_ip_allocation_method=network.IPAllocationMethod.STATIC,
                        private_ip_address=str(machine.private_ip),
                        public_ip_address=network.PublicIPAddressArgs(id=machine_ip.id),
                    )
                ],
                tags=tags,
                opts=child,
            )
            size = args.tooling_size if machine.role is Role.TOOLING and args.tooling_size else site.vm_size
            vm = compute.VirtualMachine(
                machine.name,
                vm_name=machine.name,
                resource_group_name=rg_name,
                location=site.location,
                hardware_profile=compute.HardwareProfileArgs(vm_size=size),
                os_profile=compute.OSProfileArgs(
                    computer_name=machine.name,
                    admin_username=args.stack.admin_user,
                    custom_data=base64.b64encode(args.user_data[machine.name].encode()).decode(),
                    linux_configuration=compute.LinuxConfigurationArgs(
                        disable_password_authentication=True,
                        ssh=compute.SshConfigurationArgs(
                            public_keys=[
                                compute.SshPublicKeyArgs(
                                    path=f"/home/{args.stack.admin_user}/.ssh/authorized_keys",
                                    key_data=args.stack.ssh_public_key,
                                )
                            ]
                        ),
                    ),
                ),
                storage_profile=compute.StorageProfileArgs(
                    image_reference=role_images[machine.role],
                    os_disk=compute.OSDiskArgs(
                        create_option=compute.DiskCreateOptionTypes.FROM_IMAGE,
                        delete_option=compute.DiskDeleteOptionTypes.DELETE,
                        managed_disk=compute.ManagedDiskParametersArgs(storage_account_type=compute.StorageAccountTypes.STANDARD_SS_D_LRS),
                    ),
                ),
                network_profile=compute.NetworkProfileArgs(network_interfaces=[compute.NetworkInterfaceReferenceArgs(id=nic.id, primary=True)]),
                tags=dict(args.role_labels[machine.role]),
                # Fixed VM name: the old VM must go before its replacement. NIC and public
                # address stay, so a replaced machine keeps both addresses.
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(delete_before_replace=True, replace_on_changes=list(VM_CREATE_ONLY_PROPERTIES))
                ),
            )
            self.node(machine, machine_ip.ip_address.apply(lambda ip: ip or ""), vm)

        instances = 2 if site.active_active else 1
        gateway_ips = [
            self._static_public_ip(child_name(name, f"vpn-gw-pip-{i}"), site, rg_name, tags, zones=list(site.gateway_zones) or None, opts=child)
            for i in range(instances)
        ]
        gateway_name = child_name(name, "vpn-gw")
        peering_addresses = None
        if any(args.custom_bgp_addresses):
            # The gateway's own IP configuration ids are needed in its own inputs: build them
            # from the subscription, group and names, as Azure will.
            client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(provider=self.provider))
            peering_addresses = [
                network.IPConfigurationBgpPeeringAddressArgs(
                    ipconfiguration_id=pulumi.Output.concat(
                        "/subscriptions/",
                        client.subscription_id,
                        "/resourceGroups/",
                        rg_name,
                        "/providers/Microsoft.Network/virtualNetworkGateways/",
                        gateway_name,
                        "/ipConfigurations/",
                        ip_configuration_name(i),
                    ),
                    custom_bgp_ip_addresses=list(addresses),
                )
                for i, addresses in enumerate(args.custom_bgp_addresses)
                if addresses
            ]
        self.vnet_gateway = network.VirtualNetworkGateway(
            child_name(name, "vpn-gw"),
            virtual_network_gateway_name=gateway_name,
            resource_group_name=rg_name,
            location=site.location,
            gateway_type=network.VirtualNetworkGatewayType.VPN,
            vpn_type=network.VpnType.ROUTE_BASED,
            vpn_gateway_generation=gateway_generation(site.gateway_sku),
            sku=network.VirtualNetworkGatewaySkuArgs(
                name=network.VirtualNetworkGatewaySkuName(site.gateway_sku),
                tier=network.VirtualNetworkGatewaySkuTier(site.gateway_sku),
            ),
            active_active=site.active_active,
            enable_bgp=True,
            bgp_settings=network.BgpSettingsArgs(asn=site.asn, bgp_peering_addresses=peering_addresses),
            ip_configurations=[
                network.VirtualNetworkGatewayIPConfigurationArgs(
                    name=ip_configuration_name(i),
                    subnet=network.SubResourceArgs(id=gateway_subnet.id),
                    public_ip_address=network.SubResourceArgs(id=ip.id),
                    private_ip_allocation_method=network.IPAllocationMethod.DYNAMIC,
                )
                for i, ip in enumerate(gateway_ips)
            ],
            tags=tags,
            # Creating a VNet gateway takes 30-45 minutes: say so instead of looking stuck.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create="75m"))),
        )
        self.gateway = GatewayEndpoint(
            kind=GatewayKind.AZURE_VNET_GATEWAY,
            public_ips=tuple(ip.ip_address.apply(lambda a: a or "") for ip in gateway_ips),
            inner_ip=None,
            asn=site.asn,
        )
        self._register_site_outputs()

    @staticmethod
    def _static_public_ip(
        name: str,
        site: AzureSiteConfig,
        rg_name: pulumi.Input[str],
        tags: dict[str, str],
        zones: list[str] | None,
        opts: pulumi.ResourceOptions,
    ) -> network.PublicIPAddress:
        """A static Standard public address: known before anything that peers with it."""
        return network.PublicIPAddress(
            name,
            public_ip_address_name=name,
            resource_group_name=rg_name,
            location=site.location,
            sku=network.PublicIPAddressSkuArgs(name=network.PublicIPAddressSkuName.STANDARD, tier=network.PublicIPAddressSkuTier.REGIONAL),
            public_ip_allocation_method=network.IPAllocationMethod.STATIC,
            public_ip_address_version=network.IPVersion.I_PV4,
            zones=zones,
            tags=tags,
            opts=opts,
        )
