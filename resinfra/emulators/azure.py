"""Azure as pulumi-azure-native (generated from the Azure REST API specifications) presents it."""

from resinfra.emulators.package import Package

# An ARM resource's id is /subscriptions/<s>/resourceGroups/<g>/providers/<ns>/<type>/<name>:
# pulumi-azure-native marks the URL path parameters and the location forceNew in its
# metadata (provider/pkg/resources: `forceNew` for path parameters and `location`).
_IDENTITY = frozenset(
    {
        "resourceGroupName",
        "location",
        "vmName",
        "networkInterfaceName",
        "networkSecurityGroupName",
        "publicIpAddressName",
        "subnetName",
        "virtualNetworkName",
        "virtualNetworkGatewayName",
        "virtualNetworkGatewayConnectionName",
        "localNetworkGatewayName",
    }
)

# PUT is create-or-update in ARM: any other change is applied in place (what the VM refuses,
# e.g. customData, fails at `up`; the program asks for replacement with replaceOnChanges).
PACKAGE = Package(name="azure-native", sdk_module="pulumi_azure_native", identity_inputs=_IDENTITY)
