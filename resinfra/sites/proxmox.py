"""Proxmox VE site: VMs cloned from a cloud-init template on a public and a private bridge, VM firewalls, strongSwan gateway VM."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_proxmoxve as proxmoxve
from pulumi_proxmoxve import firewall

from resinfra.addressing import FIRST_WORKER_HOST_OFFSET, NodeAddress, Role
from resinfra.config import Provider
from resinfra.config import ProxmoxSite as ProxmoxSiteConfig
from resinfra.exposure import IngressRule, Protocol, ingress_rules
from resinfra.naming import child_name
from resinfra.sites.base import GatewayEndpoint, GatewayKind, SiteArgs, SiteComponent

TYPE_TOKEN = "resinfra:sites:ProxmoxSite"
GATEWAY_VM_ID_OFFSET = 0
TOOLING_VM_ID_OFFSET = 1


@dataclass(frozen=True)
class ProxmoxCredentials:
    """``proxmoxve:*`` values for the site's explicit provider."""

    endpoint: str | None = None
    api_token: pulumi.Output[str] | None = None
    insecure: bool | None = None
    ssh: pulumi.Output[Any] | None = None
    """``proxmoxve:ssh`` ({username, agent, privateKey}): uploading cloud-init snippets needs SSH to the node."""


def credentials_from_config() -> ProxmoxCredentials:
    """Read ``proxmoxve:endpoint``, ``apiToken`` (secret), ``insecure`` and ``ssh`` (secret object)."""
    config = pulumi.Config("proxmoxve")
    return ProxmoxCredentials(
        endpoint=config.get("endpoint"),
        api_token=config.get_secret("apiToken"),
        insecure=config.get_bool("insecure"),
        ssh=config.get_secret_object("ssh"),
    )


@dataclass(frozen=True, kw_only=True)
class ProxmoxSiteArgs(SiteArgs):
    site: ProxmoxSiteConfig
    credentials: ProxmoxCredentials


def vm_id(site: ProxmoxSiteConfig, machine: NodeAddress) -> int:
    """Stable VM id: gateway = base, tooling = base+1, worker k = base+9+k."""
    if machine.role is Role.WORKER:
        return site.vm_id_base + FIRST_WORKER_HOST_OFFSET - 1 + machine.index
    if machine.role is Role.GATEWAY:
        return site.vm_id_base + GATEWAY_VM_ID_OFFSET
    return site.vm_id_base + TOOLING_VM_ID_OFFSET


def user_data_file_name(machine: str, user_data: str) -> str:
    """The snippet's file name, with a digest of its content: a changed user-data is a new file,
    written before the old one is deleted (one fixed name would be overwritten, then deleted)."""
    return f"{machine}-user-data-{hashlib.sha256(user_data.encode()).hexdigest()[:12]}.yaml"


def firewall_rules(rules: list[IngressRule]) -> list[firewall.RulesLegacyRuleArgs]:
    """Proxmox VM firewall rules (the VM's input policy drops everything else)."""
    return [
        firewall.RulesLegacyRuleArgs(
            type="in",
            action="ACCEPT",
            proto=rule.protocol.value if rule.protocol is not Protocol.ANY else None,
            dport=str(rule.port) if rule.port is not None else None,
            # Proxmox takes a comma-separated list of networks in one rule.
            source=",".join(rule.sources) if rule.sources != ("0.0.0.0/0",) else None,
            comment=rule.description,
        )
        for rule in rules
    ]


class ProxmoxSite(SiteComponent):
    """A site on Proxmox VE: VMs on one node, public addresses from a configured range, a strongSwan gateway VM."""

    gateway_vm: proxmoxve.VmLegacy
    provider: proxmoxve.Provider

    def __init__(self, name: str, args: ProxmoxSiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        site = args.site
        plan = args.addresses
        creds = args.credentials
        assert plan.gateway_vm is not None, "Proxmox sites run a gateway VM"
        self.site_name = site.name
        self.provider_kind = Provider.PROXMOX
        self.addresses = plan
        self.labels = dict(args.labels)
        self.nodes = []

        ssh = creds.ssh
        self.provider = proxmoxve.Provider(
            child_name(name, "provider"),
            endpoint=creds.endpoint,
            api_token=creds.api_token,
            insecure=creds.insecure,
            ssh=proxmoxve.ProviderSshArgs(
                username=ssh.apply(lambda s: (s or {}).get("username")),
                agent=ssh.apply(lambda s: (s or {}).get("agent")),
                private_key=ssh.apply(lambda s: (s or {}).get("privateKey")),
            )
            if ssh is not None
            else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        public_prefix = ipaddress.IPv4Network(site.public_range).prefixlen
        tags = sorted(f"{k}-{v}" for k, v in args.labels.items())  # label values are tag-safe (stack.label_value)

        def machine_vm(machine: NodeAddress) -> proxmoxve.VmLegacy:
            assert machine.public_ip is not None, "the address plan gives every Proxmox machine a public address"
            user_data = proxmoxve.FileLegacy(
                child_name(name, f"{self.machine_suffix(name, machine)}-ud"),
                node_name=site.node,
                datastore_id=site.snippets_datastore,
                content_type="snippets",
                source_raw=proxmoxve.FileLegacySourceRawArgs(
                    data=args.user_data[machine.name], file_name=user_data_file_name(machine.name, args.user_data[machine.name])
                ),
                opts=child,
            )
            ident = vm_id(site, machine)
            # Proxmox has no machine types: the resinfra VM gets the site's cores and memory.
            vm = proxmoxve.VmLegacy(
                machine.name,
                name=machine.name,
                node_name=site.node,
                vm_id=ident,
                # templateVmId (stock), the role's Packer-built template, or an override.
                clone=proxmoxve.VmLegacyCloneArgs(vm_id=int(args.images[machine.role].reference), full=True, datastore_id=site.datastore),
                cpu=proxmoxve.VmLegacyCpuArgs(cores=site.cores, type="host"),
                memory=proxmoxve.VmLegacyMemoryArgs(dedicated=site.memory_mb),
                network_devices=[
                    proxmoxve.VmLegacyNetworkDeviceArgs(bridge=site.public_bridge, firewall=True, model="virtio"),
                    proxmoxve.VmLegacyNetworkDeviceArgs(bridge=site.private_bridge, firewall=True, model="virtio"),
                ],
                initialization=proxmoxve.VmLegacyInitializationArgs(
                    datastore_id=site.datastore,
                    ip_configs=[
                        proxmoxve.VmLegacyInitializationIpConfigArgs(
                            ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(address=f"{machine.public_ip}/{public_prefix}", gateway=site.public_gateway)
                        ),
                        proxmoxve.VmLegacyInitializationIpConfigArgs(
                            ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(address=f"{machine.private_ip}/{plan.subnet.prefixlen}")
                        ),
                    ],
                    user_data_file_id=user_data.id,
                ),
                operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
                agent=proxmoxve.VmLegacyAgentArgs(enabled=False),
                on_boot=True,
                started=True,
                tags=sorted({*tags, f"resinfra-role-{machine.role.value}"}),
                # Fixed VM id and addresses: the old VM must go before its replacement. cloud-init reads
                # user-data at first boot only: a new snippet (new name) means a new VM, as on Hetzner and Azure.
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(delete_before_replace=True, replace_on_changes=["initialization.userDataFileId"])
                ),
            )
            # Proxmox deletes a VM's firewall with the VM: replace it with the VM (healer, `--replace`), and
            # delete it first, or deleting the old rules after the new ones are written would clear the new VM's.
            vm_opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(parent=vm, replace_with=[vm], delete_before_replace=True))
            firewall.OptionsLegacy(
                f"{machine.name}-fw-options",
                node_name=site.node,
                vm_id=ident,
                enabled=True,
                input_policy="DROP",
                output_policy="ACCEPT",
                opts=vm_opts,
            )
            firewall.RulesLegacy(
                f"{machine.name}-fw-rules",
                node_name=site.node,
                vm_id=ident,
                rules=firewall_rules(ingress_rules(args.stack, machine.role)),
                opts=vm_opts,
            )
            self.node(machine, pulumi.Output.from_input(str(machine.public_ip)), vm)
            return vm

        for machine in plan.machines:
            vm = machine_vm(machine)
            if machine.role is Role.GATEWAY:
                self.gateway_vm = vm

        self.gateway = GatewayEndpoint(
            kind=GatewayKind.STRONGSWAN,
            public_ips=(pulumi.Output.from_input(str(plan.gateway_vm.public_ip)),),
            inner_ip=str(plan.gateway_vm.private_ip),
            asn=None,
        )
        self._register_site_outputs()
