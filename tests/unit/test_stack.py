"""The whole program under mocks, for several stack shapes: what it declares."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections import Counter
from typing import Any

import pytest
import yaml

from resinfra.offline import DeclaredResource, OfflineRun, run_offline
from resinfra.sites.proxmox import user_data_file_name
from tests.conftest import STACK_SHAPES, dev_config, shape

ADMIN_CIDRS = dev_config()["resinfra:adminCidrs"]
SUPERNET = dev_config()["resinfra:supernet"]
WORLD = "0.0.0.0/0"

EXPECTED_PER_SITE = {
    "gcp": {
        "pulumi:providers:gcp": 1,
        "gcp:compute/network:Network": 1,
        "gcp:compute/subnetwork:Subnetwork": 1,
        "gcp:compute/firewall:Firewall": 2,
        "gcp:compute/instance:Instance": 2,
        "gcp:compute/haVpnGateway:HaVpnGateway": 1,
        "gcp:compute/router:Router": 1,
    },
    "azure": {
        "pulumi:providers:azure-native": 1,
        "azure-native:resources:ResourceGroup": 1,
        "azure-native:network:NetworkSecurityGroup": 1,
        "azure-native:network:VirtualNetwork": 1,
        "azure-native:network:Subnet": 2,
        "azure-native:network:PublicIPAddress": 3,
        "azure-native:network:NetworkInterface": 2,
        "azure-native:compute:VirtualMachine": 2,
        "azure-native:network:VirtualNetworkGateway": 1,
    },
    "hetzner": {
        "pulumi:providers:hcloud": 1,
        "hcloud:index/sshKey:SshKey": 1,
        "hcloud:index/network:Network": 1,
        "hcloud:index/networkSubnet:NetworkSubnet": 1,
        "hcloud:index/firewall:Firewall": 2,
        "hcloud:index/primaryIp:PrimaryIp": 1,
        "hcloud:index/server:Server": 3,
    },
    "proxmox": {
        "pulumi:providers:proxmoxve": 1,
        "pulumi:providers:command": 1,
        "command:remote:Command": 1,
        "proxmoxve:index/fileLegacy:FileLegacy": 3,
        "proxmoxve:index/vmLegacy:VmLegacy": 3,
        "proxmoxve:firewall/optionsLegacy:OptionsLegacy": 3,
        "proxmoxve:firewall/rulesLegacy:RulesLegacy": 3,
    },
}
TOOLING_EXTRA = {
    "gcp": {"gcp:compute/address:Address": 1, "gcp:compute/instance:Instance": 1},
    "azure": {"azure-native:network:PublicIPAddress": 1, "azure-native:network:NetworkInterface": 1, "azure-native:compute:VirtualMachine": 1},
    "hetzner": {"hcloud:index/server:Server": 1, "hcloud:index/primaryIp:PrimaryIp": 1, "hcloud:index/firewall:Firewall": 1},
    "proxmox": {
        "proxmoxve:index/fileLegacy:FileLegacy": 1,
        "proxmoxve:index/vmLegacy:VmLegacy": 1,
        "proxmoxve:firewall/optionsLegacy:OptionsLegacy": 1,
        "proxmoxve:firewall/rulesLegacy:RulesLegacy": 1,
    },
}
"""What the site hosting the tooling VM declares on top."""
COMPONENT_TYPES = {
    "gcp": "resinfra:sites:GcpSite",
    "azure": "resinfra:sites:AzureSite",
    "hetzner": "resinfra:sites:HetznerSite",
    "proxmox": "resinfra:sites:ProxmoxSite",
}


MESH_TYPE = "resinfra:mesh:IpsecMesh"


def site_resources(run: OfflineRun, provider: str) -> list[DeclaredResource]:
    return [r for r in run.resources if r.custom and COMPONENT_TYPES[provider] in run.ancestor_types(r)]


@pytest.fixture(params=list(STACK_SHAPES))
def shaped(request: pytest.FixtureRequest, offline_runs: dict[str, OfflineRun]) -> tuple[tuple[str, ...], OfflineRun]:
    return STACK_SHAPES[request.param], offline_runs[request.param]


def test_each_site_declares_its_resources(shaped: tuple[tuple[str, ...], OfflineRun]) -> None:
    providers, run = shaped
    tooling_site = "hetzner" if "hetzner" in providers else providers[0]
    assert run.outputs["tooling"]["site"] == tooling_site
    for provider in providers:
        expected = dict(EXPECTED_PER_SITE[provider])
        if provider == tooling_site:
            expected = dict(Counter(expected) + Counter(TOOLING_EXTRA[provider]))
        if provider == "hetzner":
            # One route per other site, to the gateway VM.
            expected["hcloud:index/networkRoute:NetworkRoute"] = len(providers) - 1
            expected = {k: v for k, v in expected.items() if v}
        assert dict(Counter(r.type for r in site_resources(run, provider))) == expected
    mesh = {MESH_TYPE} if len(providers) > 1 else set()
    assert {r.type for r in run.resources if r.type.startswith("resinfra:")} == {COMPONENT_TYPES[p] for p in providers} | mesh | {"resinfra:tooling:ToolingVm"}


def test_every_resource_is_parented_under_a_site_component(shaped: tuple[tuple[str, ...], OfflineRun]) -> None:
    _, run = shaped
    for r in run.resources:
        if r.custom:
            owners = ("resinfra:sites:", "resinfra:tooling:", MESH_TYPE)
            assert any(t.startswith(owners) for t in run.ancestor_types(r)), f"{r.urn} is not under a site, the mesh or the tooling component"
            if not r.type.startswith("pulumi:providers:"):
                # Explicit per-site providers only: a default provider would read ambient credentials.
                assert "pulumi:providers:" in r.provider and "::default" not in r.provider, f"{r.urn} uses provider {r.provider!r}"


PHYSICAL_NAME_INPUTS = (
    "name",
    "vmName",
    "virtualNetworkName",
    "networkSecurityGroupName",
    "publicIpAddressName",
    "networkInterfaceName",
    "virtualNetworkGatewayName",
)


def test_names_are_prefixed(shaped: tuple[tuple[str, ...], OfflineRun]) -> None:
    providers, run = shaped
    stems = (*(f"ri-dev-{p}" for p in providers), "ri-dev-mesh")
    for r in run.resources:
        if r.type.startswith("pulumi:pulumi:Stack"):
            continue
        assert r.name.startswith(stems), r.name
        for key in PHYSICAL_NAME_INPUTS:
            if key in r.inputs and r.type != "azure-native:network:Subnet":
                assert str(r.inputs[key]).startswith(stems), f"{r.urn} {key}={r.inputs[key]}"


def public_rules(run: OfflineRun) -> list[tuple[str, str, str, str | None, list[str]]]:
    """(resource, applies-to, protocol, port, sources) of every inbound allow rule with a non-private source."""
    rules: list[tuple[str, str, str, str | None, list[str]]] = []

    def public(sources: list[str]) -> list[str]:
        return [s for s in sources if not ipaddress.IPv4Network(s).subnet_of(ipaddress.IPv4Network(SUPERNET))]

    for r in run.resources:
        if r.type == "gcp:compute/firewall:Firewall":
            assert r.inputs["direction"] == "INGRESS"
            for allow in r.inputs["allows"]:
                port = (allow.get("ports") or [None])[0]
                if public(r.inputs["sourceRanges"]):
                    rules.append((r.name, "network", allow["protocol"], port, public(r.inputs["sourceRanges"])))
        if r.type == "azure-native:network:NetworkSecurityGroup":
            for rule in r.inputs["securityRules"]:
                if rule["direction"] == "Inbound" and rule["access"] == "Allow":
                    sources = rule.get("sourceAddressPrefixes") or [rule.get("sourceAddressPrefix")]
                    assert "*" not in sources and "Internet" not in sources
                    if public(sources):
                        port = rule["destinationPortRange"]
                        rules.append((r.name, "subnet", rule["protocol"].lower(), None if port == "*" else port, public(sources)))
            last = max(r.inputs["securityRules"], key=lambda rule: rule["priority"])
            assert (last["access"], last["sourceAddressPrefix"], last["destinationPortRange"]) == ("Deny", "*", "*")
        if r.type == "hcloud:index/firewall:Firewall":
            for rule in r.inputs.get("rules", []):
                assert rule["direction"] == "in"
                rules.append((r.name, r.name.rsplit("-", 1)[-1], rule["protocol"], rule.get("port"), rule["sourceIps"]))
        if r.type == "proxmoxve:firewall/rulesLegacy:RulesLegacy":
            for rule in r.inputs["rules"]:
                assert rule["type"] == "in" and rule["action"] == "ACCEPT"
                sources = rule.get("source", WORLD).split(",")
                if public(sources):
                    rules.append((r.name, r.name, rule.get("proto", "any"), rule.get("dport"), public(sources)))
        if r.type == "proxmoxve:firewall/optionsLegacy:OptionsLegacy":
            assert r.inputs["enabled"] is True and r.inputs["inputPolicy"] == "DROP"
    return rules


def test_nothing_public_but_admin_ssh_and_ike_esp_on_gateways(shaped: tuple[tuple[str, ...], OfflineRun]) -> None:
    _, run = shaped
    rules = public_rules(run)
    assert rules, "the exposure check saw no firewall at all"
    for name, applies_to, protocol, port, sources in rules:
        if (protocol, port) == ("tcp", "22"):
            assert sources == ADMIN_CIDRS, f"{name}: SSH open to {sources}"
            continue
        assert "gw" in applies_to or "gateway" in applies_to, f"{name}: {protocol}/{port} from {sources} on a non-gateway"
        assert (protocol, port) in {("udp", "500"), ("udp", "4500"), ("esp", None)}, f"{name}: {protocol}/{port} is public"


def test_proxmox_nics_have_the_firewall_on(offline_runs: dict[str, OfflineRun]) -> None:
    for vm in offline_runs["all-four"].of_type("proxmoxve:index/vmLegacy:VmLegacy"):
        assert [nic["firewall"] for nic in vm.inputs["networkDevices"]] == [True, True]


def test_a_replaced_proxmox_vm_gets_its_firewall_again(offline_runs: dict[str, OfflineRun]) -> None:
    """Proxmox removes a VM's firewall with the VM: its options and rules are replaced with it (deleted
    first, so the old rules' deletion cannot clear the new VM's), or a healed VM would run without one."""
    run = offline_runs["all-four"]
    vms = {vm.name: vm for vm in run.of_type("proxmoxve:index/vmLegacy:VmLegacy")}
    for typ in ("proxmoxve:firewall/optionsLegacy:OptionsLegacy", "proxmoxve:firewall/rulesLegacy:RulesLegacy"):
        firewalls = run.of_type(typ)
        assert len(firewalls) == len(vms) == 3
        for fw in firewalls:
            vm = vms[fw.name.removesuffix("-fw-options").removesuffix("-fw-rules")]
            assert fw.replace_with == [vm.urn] and fw.delete_before_replace and fw.parent == vm.urn
            assert fw.inputs["vmId"] == vm.inputs["vmId"]


def test_gateway_public_addresses_are_static_resources(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    # Hetzner: the gateway's address is a PrimaryIp that outlives the server.
    primary = run.by_name("ri-dev-hetzner-gw-ip")
    assert primary.inputs["autoDelete"] is False and primary.inputs["type"] == "ipv4"
    gateway = run.by_name("ri-dev-hetzner-gw")
    assert gateway.inputs["publicNets"][0]["ipv4"] == int(primary.id)
    # Azure: every public address is Standard and Static; the VNet gateway uses one.
    for ip in run.of_type("azure-native:network:PublicIPAddress"):
        assert ip.inputs["publicIPAllocationMethod"] == "Static" and ip.inputs["sku"]["name"] == "Standard"
    vnet_gw = run.by_name("ri-dev-azure-vpn-gw")
    assert vnet_gw.inputs["ipConfigurations"][0]["publicIPAddress"]["id"].endswith("/publicIPAddresses/ri-dev-azure-vpn-gw-pip-0")
    assert vnet_gw.inputs["enableBgp"] is True and vnet_gw.inputs["vpnType"] == "RouteBased"
    # The tooling VM's address is a PrimaryIp too.
    assert run.by_name("ri-dev-hetzner-tooling-ip").inputs["autoDelete"] is False
    assert run.by_name("ri-dev-hetzner-tooling").inputs["publicNets"][0]["ipv4"] == int(run.by_name("ri-dev-hetzner-tooling-ip").id)
    # Proxmox: from the configured range; GCP: the HA VPN gateway's interfaces.
    sites = run.outputs["sites"]
    assert sites["proxmox"]["gateway"]["publicIps"] == ["203.0.113.18"]
    assert len(sites["gcp"]["gateway"]["publicIps"]) == 2 and all(sites["gcp"]["gateway"]["publicIps"])
    assert all(all(s["gateway"]["publicIps"]) for s in sites.values())


def user_data_of(r: DeclaredResource) -> str:
    if r.type == "gcp:compute/instance:Instance":
        return r.inputs["metadata"]["user-data"]
    if r.type == "azure-native:compute:VirtualMachine":
        return base64.b64decode(r.inputs["osProfile"]["customData"]).decode()
    if r.type == "hcloud:index/server:Server":
        return r.inputs["userData"]
    raise KeyError(r.type)


VM_TYPES = ("gcp:compute/instance:Instance", "azure-native:compute:VirtualMachine", "hcloud:index/server:Server")


def test_every_vm_boots_the_rendered_cloud_init(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    files = {f.machine: f.content for f in run.files if f.purpose == "cloud-init"}
    vms = [r for r in run.resources if r.type in VM_TYPES]
    snippets = {r.inputs["sourceRaw"]["fileName"]: r.inputs["sourceRaw"]["data"] for r in run.of_type("proxmoxve:index/fileLegacy:FileLegacy")}
    for vm in vms:
        assert user_data_of(vm) == files[vm.name]
    for vm in run.of_type("proxmoxve:index/vmLegacy:VmLegacy"):
        file_name = user_data_file_name(vm.name, files[vm.name])
        assert snippets[file_name] == files[vm.name]
        assert vm.inputs["initialization"]["userDataFileId"].endswith(f"snippets/{file_name}")
    assert set(files) == {m["name"] for m in run.outputs["inventory"]}


def test_cloud_init_contents(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    key = dev_config()["resinfra:sshPublicKey"]
    for f in (f for f in run.files if f.purpose == "cloud-init"):
        doc = yaml.safe_load(f.content)
        machine = next(m for m in run.outputs["inventory"] if m["name"] == f.machine)
        assert f.content.startswith("#cloud-config\n")
        assert doc["users"][0]["ssh_authorized_keys"] == [key] and doc["ssh_pwauth"] is False
        paths = {w["path"]: w["content"] for w in doc["write_files"]}
        assert "PasswordAuthentication no" in paths["/etc/ssh/sshd_config.d/50-resinfra.conf"]
        assert f"--web.listen-address={machine['privateIp']}:9100" in paths["/etc/default/prometheus-node-exporter"]
        # Stock images: the role's provisioning source runs first (what it installs: tests/images).
        assert doc["runcmd"][0] == ["bash", "/usr/local/lib/resinfra/provision/provision.sh", machine["role"]]
        assert f"/usr/local/lib/resinfra/provision/{machine['role']}.sh" in paths
        assert ["systemctl", "enable", "prometheus-node-exporter"] in doc["runcmd"]
        is_gateway = machine["role"] == "gateway"
        routes = paths.get("/etc/systemd/system/resinfra-routes.service", "")
        # Only Proxmox workers route the supernet themselves (their bridge has no router).
        assert (f"ip route replace {SUPERNET} via 10.10.64.4" in routes) is (machine["site"] == "proxmox" and not is_gateway)
        # Hetzner's user_data limit (32 KiB) is the smallest of the four providers.
        assert len(f.content.encode()) < 32 * 1024


def test_hetzner_routes_send_other_sites_to_the_gateway(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    routes = {r.inputs["destination"]: r.inputs["gateway"] for r in run.of_type("hcloud:index/networkRoute:NetworkRoute")}
    assert routes == {"10.10.16.0/20": "10.10.48.4", "10.10.32.0/20": "10.10.48.4", "10.10.64.0/20": "10.10.48.4"}
    network = run.by_name("ri-dev-hetzner-net")
    assert network.inputs["ipRange"] == SUPERNET


def test_replaced_vms_free_their_name_first(offline_runs: dict[str, OfflineRun]) -> None:
    """Fixed names and private addresses: create-before-delete would collide."""
    run = offline_runs["all-four"]
    vms = [r for r in run.resources if r.type in (*VM_TYPES, "proxmoxve:index/vmLegacy:VmLegacy")]
    assert len(vms) == len(run.outputs["inventory"])
    assert all(vm.delete_before_replace for vm in vms)


def test_inventory_lists_every_machine_with_its_urn(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    inventory = run.outputs["inventory"]
    assert len(inventory) == 2 * 4 + 2 + 1  # workers, Hetzner and Proxmox gateway VMs, the tooling VM
    urns = {r.urn for r in run.resources}
    for node in inventory:
        assert node["urn"] in urns and node["urn"].endswith("::" + node["name"])
        assert set(node) == {"name", "site", "provider", "role", "privateIp", "publicIp", "urn"}


def test_provider_secrets_stay_secret_and_out_of_outputs() -> None:
    values = shape("gcp", "azure", "hetzner", "proxmox")
    secrets = {
        "hcloud:token": "hcloud-token-sentinel-0123456789",
        "gcp:credentials": '{"private_key": "gcp-key-sentinel"}',
        "azure-native:clientSecret": "azure-secret-sentinel",
        "proxmoxve:apiToken": "root@pam!resinfra=proxmox-token-sentinel",
    }
    run = run_offline({**values, **secrets}, secret_keys=list(secrets))
    expectations = {
        "pulumi:providers:hcloud": "token",
        "pulumi:providers:gcp": "credentials",
        "pulumi:providers:azure-native": "clientSecret",
        "pulumi:providers:proxmoxve": "apiToken",
    }
    for typ, field in expectations.items():
        (provider,) = run.of_type(typ)
        assert field in provider.secret_inputs, f"{typ}.{field} is not a secret"
    text = repr(run.outputs) + "".join(f.content for f in run.files)
    for sentinel in ("hcloud-token-sentinel", "gcp-key-sentinel", "azure-secret-sentinel", "proxmox-token-sentinel"):
        assert sentinel not in text
    assert run.secret_outputs == set()


def test_tooling_vm_static_address_on_gcp(offline_runs: dict[str, OfflineRun]) -> None:
    """Without a Hetzner site the tooling VM lands on the first site, with a reserved address."""
    run = offline_runs["gcp-azure"]
    address = run.by_name("ri-dev-gcp-tooling-ip")
    vm = run.by_name("ri-dev-gcp-tooling")
    assert vm.inputs["networkInterfaces"][0]["accessConfigs"][0]["natIp"] == address.outputs["address"]
    tooling = dict(run.outputs["tooling"])
    tunnel = tooling.pop("sshTunnel")
    assert tooling == {"name": "ri-dev-gcp-tooling", "site": "gcp", "privateIp": "10.10.16.5", "publicIp": address.outputs["address"]}
    assert tunnel.endswith(f"resinfra@{address.outputs['address']}") and "-L 3000:10.10.16.5:3000" in tunnel


def test_adding_a_site_changes_no_other_site(offline_runs: dict[str, OfflineRun]) -> None:
    small = offline_runs["hetzner-proxmox"]
    big = offline_runs["all-four"]
    for site in ("hetzner", "proxmox"):
        a, b = small.outputs["sites"][site], big.outputs["sites"][site]
        assert (a["block"], a["subnet"], a["gateway"]["innerIp"]) == (b["block"], b["subnet"], b["gateway"]["innerIp"])
        assert [(w["name"], w["privateIp"]) for w in a["workers"]] == [(w["name"], w["privateIp"]) for w in b["workers"]]
    # The inputs of a VM do not change either (its cloud-init is the same text).
    for name in ("ri-dev-hetzner-worker-1", "ri-dev-proxmox-worker-2"):
        assert small.by_name(name).inputs == big.by_name(name).inputs


def test_labels_on_every_taggable_resource(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    for r in run.resources:
        labels: Any = r.inputs.get("labels") or r.inputs.get("tags") or r.inputs.get("defaultLabels")
        if r.type.startswith("pulumi:providers:") and isinstance(labels, str):
            labels = json.loads(labels)  # provider inputs travel as JSON text
        if r.type in VM_TYPES:
            assert labels["resinfra-role"] in {"worker", "gateway", "tooling"}
        if r.type == "proxmoxve:index/vmLegacy:VmLegacy":
            assert "resinfra-site-proxmox" in labels and any(t.startswith("resinfra-role-") for t in labels)
        elif labels:
            assert labels["resinfra-stack"] == "dev" and labels["resinfra-site"] in r.name


@pytest.mark.parametrize("shape_name", ["all-four", "gcp-azure"])
def test_a_second_run_declares_exactly_the_same(shape_name: str, offline_runs: dict[str, OfflineRun]) -> None:
    """Convergence: the same config gives the same URNs, inputs, options and dependencies, so a
    preview after `pulumi up` is empty (no clock, no unordered iteration, no fresh randomness)."""
    first = offline_runs[shape_name]
    second = run_offline(shape(*STACK_SHAPES[shape_name]), stack_name="dev")

    def declared(run: OfflineRun) -> dict[str, tuple[Any, ...]]:
        return {
            r.urn: (r.inputs, sorted(r.secret_inputs), sorted(r.dependencies), r.parent, r.provider, r.delete_before_replace, r.replace_with)
            for r in run.resources
        }

    a, b = declared(first), declared(second)
    assert a.keys() == b.keys()
    changed = [urn for urn in a if a[urn] != b[urn]]
    assert not changed, f"inputs differ between two runs of one config: {changed[:5]}"
    assert first.outputs == second.outputs


def test_labels_are_valid_on_gcp_whatever_the_stack_name() -> None:
    """Pulumi stack names may hold capitals and dots; GCP label values may not."""
    run = run_offline(shape("gcp", "hetzner"), stack_name="Prod.EU_1")
    gcp_value = re.compile(r"^[a-z0-9_-]{0,63}$")
    labelled = [r for r in run.resources if r.type.startswith("gcp:") and isinstance(r.inputs.get("labels"), dict)]
    assert labelled
    for r in labelled:
        assert all(gcp_value.match(v) for v in r.inputs["labels"].values()), (r.name, r.inputs["labels"])
        assert r.inputs["labels"]["resinfra-stack"] == "prod-eu_1"
