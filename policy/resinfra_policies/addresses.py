"""Gateways and the tooling VM use static public addresses: peers and operators depend on them."""

from __future__ import annotations

from resinfra_policies.common import Context, Props, as_list, get, role_of

STATIC_ROLES = ("gateway", "tooling")


def _gcp_instance(props: Props) -> list[str]:
    configs = [ac for nic in as_list(get(props, "networkInterfaces")) for ac in as_list(get(nic, "accessConfigs"))]
    if not configs or not all(get(ac, "natIp") for ac in configs):
        return ["public address is ephemeral: reserve a compute.Address and set accessConfigs[].natIp"]
    return []


def _hcloud_server(props: Props) -> list[str]:
    nets = as_list(get(props, "publicNets"))
    if not nets or not all(get(net, "ipv4") for net in nets):
        return ["public IPv4 is assigned with the server: give it its own hcloud.PrimaryIp (publicNets[].ipv4)"]
    return []


def _proxmox_vm(props: Props) -> list[str]:
    configs = as_list(get(props, "initialization", "ipConfigs"))
    address = get(configs[0], "ipv4", "address") if configs else None
    if not address or str(address).lower() == "dhcp":
        return ["public address comes from DHCP: give ipConfigs[0].ipv4.address a fixed address from publicRange"]
    return []


def check_static_addresses(resource_type: str, props: Props, context: Context) -> list[str]:
    """Violations of "gateways and the tooling VM use static public addresses".

    Public address resources themselves must be static (Azure ``Static`` allocation, hcloud
    Primary IPs kept when the server goes); machines labelled ``resinfra-role: gateway`` or
    ``tooling`` must use such an address. Example: an Azure PublicIPAddress with
    ``publicIPAllocationMethod: Dynamic`` gives one violation.
    """
    if resource_type == "azure-native:network:PublicIPAddress":
        method = get(props, "publicIPAllocationMethod")
        return [] if str(method) == "Static" else [f"publicIPAllocationMethod is {method}: use Static"]
    if resource_type == "hcloud:index/primaryIp:PrimaryIp":
        return ["autoDelete is true: the address would go with its server; set autoDelete: false"] if get(props, "autoDelete") is True else []
    role = role_of(resource_type, props, context.provider_props)
    if role not in STATIC_ROLES:
        return []
    if resource_type == "gcp:compute/instance:Instance":
        return [f"{role}: {v}" for v in _gcp_instance(props)]
    if resource_type == "hcloud:index/server:Server":
        return [f"{role}: {v}" for v in _hcloud_server(props)]
    if resource_type in {"proxmoxve:index/vmLegacy:VmLegacy", "proxmoxve:index/vm:Vm"}:
        return [f"{role}: {v}" for v in _proxmox_vm(props)]
    return []
