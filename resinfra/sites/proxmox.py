"""Proxmox VE site: VMs cloned from a cloud-init template on a public and a private bridge, VM firewalls, strongSwan gateway VM
(or a pair sharing VRRP addresses on both bridges)."""

from __future__ import annotations

import hashlib
import ipaddress
import textwrap
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import pulumi
import pulumi_command
import pulumi_proxmoxve as proxmoxve
from pulumi_command import remote
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
SECOND_GATEWAY_VM_ID_OFFSET = 2
"""A pair's second gateway VM (the first keeps the gateway's id); ids base+3 to base+9 stay free."""
CLONE_RETRIES = 5
"""Attempts at a full clone (bpg's ``clone.retries``, default 1). Full clones of one template
running in parallel on lvm-thin time out on a lock (bpg/terraform-provider-proxmox#995,
#1521); bpg retries a clone request that fails with HTTP 5xx or "got timeout"
(proxmox/nodes/vms/vms.go ``CloneVM``, proxmox/retry/retry.go ``IsTransientAPIError``), with
an exponential backoff from 10 s. A clone *task* that fails after it started is not retried
(retry.go: wait errors are unrecoverable): see docs/ARCHITECTURE.md. ``retries`` is ForceNew:
changing it later replaces every Proxmox VM."""
CLUSTER_FIREWALL_CONFIG = "/etc/pve/firewall/cluster.fw"
"""The datacenter firewall's configuration, the same file on every node (pmxcfs)."""


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
    """Stable VM id: gateway = base (a pair's second base+2), tooling = base+1, worker k = base+9+k."""
    if machine.role is Role.WORKER:
        return site.vm_id_base + FIRST_WORKER_HOST_OFFSET - 1 + machine.index
    if machine.role is Role.GATEWAY:
        return site.vm_id_base + (SECOND_GATEWAY_VM_ID_OFFSET if machine.index == 2 else GATEWAY_VM_ID_OFFSET)
    return site.vm_id_base + TOOLING_VM_ID_OFFSET


def datacenter_firewall_check(path: str = CLUSTER_FIREWALL_CONFIG) -> str:
    """Shell script that fails unless the datacenter firewall is enabled (``enable: 1`` in the
    ``[OPTIONS]`` section of ``path``).

    Proxmox VE applies no VM firewall rule while the datacenter firewall is off (pve-docs,
    "Proxmox VE Firewall": the firewall is disabled by default and enabled cluster-wide in
    ``cluster.fw``); every VM here relies on its VM firewall (input policy DROP).
    """
    return textwrap.dedent(
        f"""\
        f={path}
        conf=$(cat "$f" 2>/dev/null || sudo -n cat "$f" 2>/dev/null) || conf=""
        if printf '%s\\n' "$conf" | awk '/^\\[/ {{ section = toupper($0) }} section == "[OPTIONS]" && /^[ \\t]*enable:[ \\t]*1[ \\t]*$/ {{ on = 1 }} END {{ exit !on }}'; then
            exit 0
        fi
        echo "resinfra: the Proxmox VE datacenter firewall is not enabled ($f has no 'enable: 1' in [OPTIONS], or this SSH user cannot read it): the VMs' firewalls would not filter anything. Fix: enable it under Datacenter > Firewall > Options (pvesh set /cluster/firewall/options --enable 1) after checking the datacenter rules let your own access in, then run pulumi up again." >&2
        exit 1
        """
    )


def check_host(site: ProxmoxSiteConfig, endpoint: str | None) -> str:
    """Where the datacenter firewall check logs in: ``nodeAddress``, else the API endpoint's host
    (any node of the cluster holds the file), else the node's name (bpg's own last resort is a
    DNS lookup of it: fwprovider/provider.go ``apiResolver``)."""
    if site.node_address:
        return site.node_address
    host = urlsplit(endpoint).hostname if endpoint else None
    return host or site.node


def user_data_file_name(machine: str, user_data: str) -> str:
    """The snippet's file name, with a digest of its content: a changed user-data is a new file,
    written before the old one is deleted (one fixed name would be overwritten, then deleted)."""
    return f"{machine}-user-data-{hashlib.sha256(user_data.encode()).hexdigest()[:12]}.yaml"


def firewall_rules(rules: list[IngressRule]) -> list[firewall.RulesLegacyRuleArgs]:
    """Proxmox VM firewall rules, in order (the VM's input policy drops everything else). A protocol is a name of
    ``/etc/protocols`` (pve-docs "Proxmox VE Firewall", rule ``--proto``; bpg proxmoxtf/resource/firewall/rules.go)."""
    return [
        firewall.RulesLegacyRuleArgs(
            type="in",
            action="ACCEPT" if rule.accept else "DROP",
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

    gateway_vms: list[proxmoxve.VmLegacy]
    provider: proxmoxve.Provider

    def __init__(self, name: str, args: ProxmoxSiteArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        site = args.site
        plan = args.addresses
        creds = args.credentials
        assert plan.gateway_vms, "Proxmox sites run a gateway VM"
        self.site_name = site.name
        self.provider_kind = Provider.PROXMOX
        self.addresses = plan
        self.labels = dict(args.labels)
        self.nodes = []

        ssh = creds.ssh
        # Snippet uploads go over SSH to the node: the address the config gives, else the one
        # the provider resolves from the API (bpg, proxmoxtf/provider/schema.go ``ssh.node``).
        nodes = [proxmoxve.ProviderSshNodeArgs(name=site.node, address=site.node_address, port=site.node_ssh_port)] if site.node_address else None
        self.provider = proxmoxve.Provider(
            child_name(name, "provider"),
            endpoint=creds.endpoint,
            api_token=creds.api_token,
            insecure=creds.insecure,
            ssh=proxmoxve.ProviderSshArgs(
                username=ssh.apply(lambda s: (s or {}).get("username")) if ssh is not None else None,
                agent=ssh.apply(lambda s: (s or {}).get("agent")) if ssh is not None else None,
                private_key=ssh.apply(lambda s: (s or {}).get("privateKey")) if ssh is not None else None,
                nodes=nodes,
            )
            if ssh is not None or nodes
            else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=self.provider)
        firewall_check = self._check_datacenter_firewall(name, site, creds)
        public_prefix = ipaddress.IPv4Network(site.public_range).prefixlen
        tags = sorted(f"{k}-{v}" for k, v in args.labels.items())  # label values are tag-safe (stack.label_value)

        # A pair's VMs take VRRP from each other only (the Proxmox firewall, ahead of the supernet rule).
        partner = {a.name: str(b.private_ip) for a, b in (plan.pair.members, plan.pair.members[::-1])} if plan.pair else {}

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
            # Proxmox has no machine types: the tooling VM gets the site's cores and memory.
            vm = proxmoxve.VmLegacy(
                machine.name,
                name=machine.name,
                node_name=site.node,
                vm_id=ident,
                # templateVmId (stock), the role's Packer-built template, or an override.
                clone=proxmoxve.VmLegacyCloneArgs(
                    vm_id=int(args.images[machine.role].reference), full=True, datastore_id=site.datastore, retries=CLONE_RETRIES
                ),
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
                # Destroy stops the VM instead of an ACPI shutdown (bpg proxmoxtf/resource/vm/vm.go
                # ``vmDelete``): a failed machine the healer replaces may never answer ACPI, and the
                # shutdown waits up to timeout_shutdown_vm (1800 s) before it is forced. Without
                # the guest agent (stock images carry none) ACPI is all a shutdown has.
                stop_on_destroy=True,
                on_boot=True,
                started=True,
                tags=sorted({*tags, f"resinfra-role-{machine.role.value}"}),
                # Fixed VM id and addresses: the old VM must go before its replacement. cloud-init reads
                # user-data at first boot only: a new snippet (new name) means a new VM, as on Hetzner and Azure.
                # The datacenter firewall is checked before any VM is created (see _check_datacenter_firewall).
                opts=pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(delete_before_replace=True, replace_on_changes=["initialization.userDataFileId"], depends_on=[firewall_check]),
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
                rules=firewall_rules(ingress_rules(args.stack, machine.role, vrrp_peer=partner.get(machine.name))),
                opts=vm_opts,
            )
            self.node(machine, pulumi.Output.from_input(str(machine.public_ip)), vm)
            return vm

        self.gateway_vms = []
        for machine in plan.machines:
            vm = machine_vm(machine)
            if machine.role is Role.GATEWAY:
                self.gateway_vms.append(vm)

        # Peers and workers use the site's gateway addresses: the gateway VM's, or the pair's VRRP addresses (the same
        # public slot and .4, so a site going from one gateway to two changes nothing for them).
        public = plan.pair.shared_public_ip if plan.pair else plan.gateway_vms[0].public_ip
        self.gateway = GatewayEndpoint(
            kind=GatewayKind.STRONGSWAN,
            public_ips=(pulumi.Output.from_input(str(public)),),
            inner_ip=str(plan.gateway_address),
            asn=None,
            paired=plan.pair is not None,
        )
        self._register_site_outputs()

    def _check_datacenter_firewall(self, name: str, site: ProxmoxSiteConfig, creds: ProxmoxCredentials) -> remote.Command:
        """A command on the node that fails the update, before any VM exists, unless the datacenter firewall is on.

        Checked, not declared: bpg's cluster firewall resource (proxmoxtf/resource/cluster/firewall/
        firewall.go) writes every datacenter option at once (input policy DROP, ebtables off unless
        set, the log rate limit), for the whole cluster and every stack on it, and its delete leaves
        them as they are. docs/ARCHITECTURE.md has the reasoning. It runs at the first ``up`` and
        again when the node changes; it logs in as the provider's snippet uploads do.
        """
        ssh = creds.ssh
        # Config only, never the environment: the deployer's and the healer's runs must declare the same host.
        endpoint = creds.endpoint
        command_provider = pulumi_command.Provider(child_name(name, "command"), opts=pulumi.ResourceOptions(parent=self))
        return remote.Command(
            child_name(name, "dc-fw-check"),
            connection=remote.ConnectionArgs(
                host=check_host(site, endpoint),
                port=site.node_ssh_port,
                user=ssh.apply(lambda s: (s or {}).get("username") or "root") if ssh is not None else "root",
                # None when the agent logs in (SSH_AUTH_SOCK); an empty key would be parsed and refused.
                private_key=cast(pulumi.Output[str], ssh.apply(lambda s: (s or {}).get("privateKey"))) if ssh is not None else None,
                dial_error_limit=3,
            ),
            create=datacenter_firewall_check(),
            triggers=[site.node],
            opts=pulumi.ResourceOptions(parent=self, provider=command_provider),
        )
