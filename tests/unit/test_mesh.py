"""The IPsec mesh under mocks, for 2-, 3- and 4-site stacks: what both ends of every link get."""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
import json
import re
from typing import Any

import pytest

from resinfra.mesh import crypto
from resinfra.mesh.emulate import crypto_of
from resinfra.offline import DeclaredResource, OfflineRun, run_offline
from tests.conftest import shape

MESH_SHAPES = {
    "gcp-azure": ("gcp", "azure"),
    "hetzner-proxmox": ("hetzner", "proxmox"),
    "gcp-hetzner-proxmox": ("gcp", "hetzner", "proxmox"),
    "azure-hetzner-proxmox": ("azure", "hetzner", "proxmox"),
    "all-four": ("gcp", "azure", "hetzner", "proxmox"),
}
AZURE_APIPA = (ipaddress.IPv4Address("169.254.21.0"), ipaddress.IPv4Address("169.254.22.255"))


def active_active(values: dict[str, Any]) -> dict[str, Any]:
    values = copy.deepcopy(values)
    next(s for s in values["resinfra:sites"] if s["provider"] == "azure")["activeActive"] = True
    return values


@pytest.fixture(scope="module")
def mesh_runs() -> dict[str, OfflineRun]:
    runs = {name: run_offline(shape(*providers)) for name, providers in MESH_SHAPES.items()}
    runs["all-four-active-active"] = run_offline(active_active(shape("gcp", "azure", "hetzner", "proxmox")))
    return runs


@pytest.fixture(params=[*MESH_SHAPES, "all-four-active-active"])
def run(request: pytest.FixtureRequest, mesh_runs: dict[str, OfflineRun]) -> OfflineRun:
    return mesh_runs[request.param]


# -- reading both ends back from what was declared and rendered ---------------------------


def mesh_psks(run: OfflineRun) -> list[DeclaredResource]:
    """The mesh's RandomPasswords (the resinfra VM has its own for tokens)."""
    return [r for r in run.of_type("random:index/randomPassword:RandomPassword") if "resinfra:mesh:IpsecMesh" in run.ancestor_types(r)]


def psk_values(run: OfflineRun) -> dict[tuple[str, str, int], str]:
    """PSK by (site a, site b, tunnel) from the RandomPassword resources."""
    out = {}
    for r in mesh_psks(run):
        match = re.fullmatch(r"ri-dev-(\w+)-psk-(\w+)-(\d)", r.name)
        assert match, r.name
        out[match[1], match[2], int(match[3])] = r.outputs["result"]
    return out


def swanctl_connections(text: str) -> dict[str, dict[str, Any]]:
    """name -> {local, remote, proposals, esp, local_ts, remote_ts, psk} from a rendered swanctl.conf."""
    conns: dict[str, dict[str, Any]] = {}
    body = text.split("\nsecrets {", 1)
    for match in re.finditer(r"^    (\S+) \{\n(.*?)^    \}", body[0], flags=re.MULTILINE | re.DOTALL):
        block = match[2]

        def value(key: str, block: str = block) -> str:
            found = re.search(rf"^\s+{key} = (.+)$", block, flags=re.MULTILINE)
            assert found, key
            return found[1]

        conns[match[1]] = {
            "local": value("local_addrs"),
            "remote": value("remote_addrs"),
            "proposals": value("proposals"),
            "esp": value("esp_proposals"),
            "local_ts": value("local_ts").split(","),
            "remote_ts": value("remote_ts").split(","),
        }
    for match in re.finditer(r"ike-(\S+) \{\n\s+id-local = (\S+)\n\s+id-remote = (\S+)\n\s+secret = 0s(\S+)", body[1]):
        conns[match[1]]["psk"] = base64.b64decode(match[4]).decode()
        assert (match[2], match[3]) == (conns[match[1]]["local"], conns[match[1]]["remote"])
    return conns


def ends(run: OfflineRun) -> dict[tuple[str, str], dict[str, Any]]:
    """Every link end's view, by (link-tunnel, site): addresses, PSK, selectors, crypto, BGP."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    gateways = {v.gateway_vm.name: k for k, v in run.result.plan.items() if v.gateway_vm}
    for f in run.files:
        if f.purpose == "swanctl":
            site = gateways[f.machine]
            for name, conn in swanctl_connections(f.content).items():
                policy = crypto.CryptoPolicy(*conn["proposals"].split("-"), *conn["esp"].split("-"))
                out[name, site] = {**conn, "crypto": policy, "secret_file": f.secret}
        if f.purpose == "managed-ipsec":
            description = json.loads(f.content)
            for tunnel in description["tunnels"]:
                out[f"{description['link']}-{tunnel['index']}", description["site"]] = {
                    "local": tunnel["localAddress"],
                    "remote": tunnel["peerAddress"],
                    "psk": tunnel["psk"],
                    "local_ts": tunnel["localTrafficSelectors"],
                    "remote_ts": tunnel["remoteTrafficSelectors"],
                    "crypto": crypto_of(description),
                    "bgp": tunnel["bgp"],
                    "secret_file": f.secret,
                }
    return out


def sites_of(run: OfflineRun) -> list[str]:
    return [s.name for s in sorted(run.config.sites, key=lambda s: s.number)]


# -- the properties ------------------------------------------------------------------------


def test_exactly_one_link_per_pair(run: OfflineRun) -> None:
    pairs = {f"{a}-{b}" for a, b in itertools.combinations(sites_of(run), 2)}
    names = [t["name"] for t in run.outputs["tunnels"]]
    assert sorted(names) == sorted(pairs)
    assert len(mesh_psks(run)) == sum(t["tunnels"] for t in run.outputs["tunnels"])


def test_both_ends_of_every_tunnel_exist_and_mirror_each_other(run: OfflineRun) -> None:
    views = ends(run)
    psks = psk_values(run)
    for link in run.outputs["tunnels"]:
        a, b = (e["site"] for e in link["ends"])
        for index in range(link["tunnels"]):
            name = f"{link['name']}-{index}"
            end_a, end_b = views[name, a], views[name, b]
            assert (end_a["local"], end_a["remote"]) == (end_b["remote"], end_b["local"]), name
            assert end_a["psk"] == end_b["psk"] == psks[a, b, index], f"{name}: both ends carry the tunnel's own PSK"
            assert len(end_a["psk"]) >= 32
            assert end_a["crypto"] == end_b["crypto"] == crypto.POLICY, name
            assert (end_a["local_ts"], end_a["remote_ts"]) == (end_b["remote_ts"], end_b["local_ts"]), f"{name}: mirrored selectors"
            assert end_a["secret_file"] and end_b["secret_file"]
    assert len(set(psks.values())) == len(psks), "a PSK per tunnel, never one shared key"


def test_static_selectors_are_the_site_blocks(run: OfflineRun) -> None:
    blocks = {name: str(p.block) for name, p in run.result.plan.items()}
    for (name, site), view in ends(run).items():
        if view.get("bgp") is None:
            peer = next(s for s in name.rsplit("-", 1)[0].split("-") if s != site)
            assert (view["local_ts"], view["remote_ts"]) == ([blocks[site]], [blocks[peer]])


def declared_psk_inputs(run: OfflineRun) -> list[tuple[DeclaredResource, str]]:
    found = [(r, "sharedKey") for r in run.of_type("azure-native:network:VirtualNetworkGatewayConnection")]
    found += [(r, "sharedSecret") for r in run.of_type("gcp:compute/vPNTunnel:VPNTunnel")]
    found += [(r, "stdin") for r in run.of_type("command:remote:Command") if "resinfra:mesh:IpsecMesh" in run.ancestor_types(r)]
    return found


def test_psks_reach_every_end_as_secrets(run: OfflineRun) -> None:
    psks = set(psk_values(run).values())
    for resource, key in declared_psk_inputs(run):
        assert key in resource.secret_inputs, f"{resource.name}.{key} is not secret"
        value = resource.inputs[key]
        if key == "stdin":
            carried = {base64.b64decode(m).decode() for m in re.findall(r"secret = 0s(\S+)", value)}
            assert carried and carried <= psks
        else:
            assert value in psks
    # Nothing outside secrets carries a PSK.
    outputs = json.dumps(run.outputs)
    assert not any(psk in outputs for psk in psks)
    for f in run.files:
        if any(psk in f.content or base64.b64encode(psk.encode()).decode() in f.content for psk in psks):
            assert f.secret, f"{f.machine}/{f.filename} holds a PSK but is not secret"


def test_azure_and_gcp_receive_exactly_the_description(run: OfflineRun) -> None:
    """The JSON descriptions (what the emulated ends are built from) equal the declared inputs."""
    descriptions = [json.loads(f.content) for f in run.files if f.purpose == "managed-ipsec"]
    for d in descriptions:
        peer = d["peerSite"]
        for t in d["tunnels"]:
            i = t["index"]
            if d["cloud"] == "azure":
                conn = run.by_name(f"ri-dev-azure-conn-{peer}-{i}")
                lng = run.by_name(f"ri-dev-azure-lng-{peer}-{i}")
                assert conn.inputs["sharedKey"] == t["psk"]
                assert conn.inputs["ipsecPolicies"] == [d["ipsecPolicy"]]
                assert conn.inputs["connectionProtocol"] == "IKEv2" and conn.inputs["connectionType"] == "IPsec"
                assert conn.inputs["dpdTimeoutSeconds"] == d["dpdTimeoutSeconds"]
                assert lng.inputs["gatewayIpAddress"] == t["peerAddress"]
                assert conn.inputs["localNetworkGateway2"]["id"] == lng.id
                gateway = run.by_name("ri-dev-azure-vpn-gw")
                assert t["localAddress"] in {ip.outputs["ipAddress"] for ip in run.of_type("azure-native:network:PublicIPAddress") if "vpn-gw-pip" in ip.name}
                if t["bgp"]:
                    bgp = t["bgp"]
                    assert conn.inputs["enableBgp"] is True
                    assert [c["customBgpIpAddress"] for c in conn.inputs["gatewayCustomBgpIpAddresses"]] == [bgp["localAddress"]]
                    assert lng.inputs["bgpSettings"] == {"asn": bgp["peerAsn"], "bgpPeeringAddress": bgp["peerAddress"]}
                    assert gateway.inputs["bgpSettings"]["asn"] == bgp["localAsn"]
                    custom = [a for p in gateway.inputs["bgpSettings"]["bgpPeeringAddresses"] for a in p["customBgpIpAddresses"]]
                    assert bgp["localAddress"] in custom
                    assert d["advertises"] == run.by_name("ri-dev-azure-vnet").inputs["addressSpace"]["addressPrefixes"]
                else:
                    assert conn.inputs["usePolicyBasedTrafficSelectors"] is True and conn.inputs["enableBgp"] is False
                    assert lng.inputs["localNetworkAddressSpace"]["addressPrefixes"] == t["remoteTrafficSelectors"]
                    assert run.by_name("ri-dev-azure-vnet").inputs["addressSpace"]["addressPrefixes"] == t["localTrafficSelectors"]
            else:
                tunnel = run.by_name(f"ri-dev-gcp-tun-{peer}-{i}")
                assert tunnel.inputs["sharedSecret"] == t["psk"]
                assert tunnel.inputs["ikeVersion"] == d["ikeVersion"] == 2
                assert tunnel.inputs["cipherSuite"] == d["cipherSuite"]
                if t["bgp"]:
                    bgp = t["bgp"]
                    external = run.by_name(f"ri-dev-gcp-peer-{peer}")
                    assert external.inputs["interfaces"][int(tunnel.inputs["peerExternalGatewayInterface"])]["ipAddress"] == t["peerAddress"]
                    ha = run.by_name("ri-dev-gcp-vpn-gw").outputs["vpnInterfaces"]
                    assert ha[int(tunnel.inputs["vpnGatewayInterface"])]["ipAddress"] == t["localAddress"]
                    interface = run.by_name(f"ri-dev-gcp-if-{peer}-{i}")
                    router_peer = run.by_name(f"ri-dev-gcp-bgp-{peer}-{i}")
                    assert interface.inputs["ipRange"] == f"{bgp['localAddress']}/30"
                    assert ipaddress.IPv4Network(bgp["ipRange"]) == ipaddress.IPv4Interface(interface.inputs["ipRange"]).network
                    assert (router_peer.inputs["peerIpAddress"], router_peer.inputs["peerAsn"]) == (bgp["peerAddress"], bgp["peerAsn"])
                    assert router_peer.inputs["ipAddress"] == bgp["localAddress"]
                    assert run.by_name("ri-dev-gcp-router").inputs["bgp"]["asn"] == bgp["localAsn"]
                    assert d["advertises"] == [run.by_name("ri-dev-gcp-subnet").inputs["ipCidrRange"]]
                else:
                    assert tunnel.inputs["peerIp"] == t["peerAddress"]
                    assert run.by_name("ri-dev-gcp-cvpn-ip").outputs["address"] == t["localAddress"]
                    assert (tunnel.inputs["localTrafficSelectors"], tunnel.inputs["remoteTrafficSelectors"]) == (
                        t["localTrafficSelectors"],
                        t["remoteTrafficSelectors"],
                    )
                    route = run.by_name(f"ri-dev-gcp-rt-{peer}-{i}")
                    assert route.inputs["destRange"] == t["remoteTrafficSelectors"][0]


def test_bgp_addresses_and_asns_mirror_and_apipa_is_unique(run: OfflineRun) -> None:
    views = ends(run)
    networks = []
    for link in run.outputs["tunnels"]:
        if link["routing"] != "bgp":
            continue
        a, b = (e["site"] for e in link["ends"])
        for index in range(link["tunnels"]):
            bgp_a, bgp_b = views[f"{link['name']}-{index}", a]["bgp"], views[f"{link['name']}-{index}", b]["bgp"]
            assert (bgp_a["localAddress"], bgp_a["localAsn"]) == (bgp_b["peerAddress"], bgp_b["peerAsn"])
            assert (bgp_a["peerAddress"], bgp_a["peerAsn"]) == (bgp_b["localAddress"], bgp_b["localAsn"])
            network = ipaddress.IPv4Network(bgp_a["ipRange"])
            assert network.prefixlen == 30 and bgp_a["ipRange"] == bgp_b["ipRange"]
            assert {ipaddress.IPv4Address(bgp_a["localAddress"]), ipaddress.IPv4Address(bgp_a["peerAddress"])} == set(network.hosts())
            assert AZURE_APIPA[0] <= network.network_address and network.broadcast_address <= AZURE_APIPA[1], "Azure's custom APIPA range"
            networks.append(network)
    ranges = [ipaddress.IPv4Interface(r.inputs["ipRange"]).network for r in run.of_type("gcp:compute/routerInterface:RouterInterface")]
    assert sorted(ranges) == sorted(networks)
    assert len(set(networks)) == len(networks), "APIPA /30s are unique"


def test_active_active_gives_two_tunnels_on_both_interfaces(mesh_runs: dict[str, OfflineRun]) -> None:
    run = mesh_runs["all-four-active-active"]
    link = next(t for t in run.outputs["tunnels"] if t["routing"] == "bgp")
    assert link["tunnels"] == 2
    external = run.by_name("ri-dev-gcp-peer-azure")
    assert external.inputs["redundancyType"] == "TWO_IPS_REDUNDANCY" and len(external.inputs["interfaces"]) == 2
    tunnels = [run.by_name(f"ri-dev-gcp-tun-azure-{i}") for i in (0, 1)]
    assert [t.inputs["vpnGatewayInterface"] for t in tunnels] == [0, 1]
    assert [t.inputs["peerExternalGatewayInterface"] for t in tunnels] == [0, 1]
    gateway = run.by_name("ri-dev-azure-vpn-gw")
    peering = gateway.inputs["bgpSettings"]["bgpPeeringAddresses"]
    assert [p["ipconfigurationId"].rsplit("/", 1)[-1] for p in peering] == ["ipconfig-0", "ipconfig-1"]
    assert all(p["ipconfigurationId"].startswith("/subscriptions/") for p in peering)
    single = mesh_runs["all-four"].by_name("ri-dev-gcp-peer-azure")
    assert single.inputs["redundancyType"] == "SINGLE_IP_INTERNALLY_REDUNDANT"


WEAK = {w.lower() for w in crypto.FORBIDDEN}


def tokens(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(tokens(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(tokens(v) for v in value)) if value else set()
    if isinstance(value, str):
        # Base64 payloads (the healer's project bundle, a compressed tarball) are not text: split on
        # '+' and '/', they yield random short tokens that may spell an algorithm name.
        value = BASE64_RUN.sub(" ", value)
        return {t.lower() for t in re.split(r"[^A-Za-z0-9]+", value) if t} | {t.lower() for t in re.split(r"[\s,=/]+", value) if t}
    return set()


BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")


def test_no_weak_algorithm_anywhere(run: OfflineRun) -> None:
    found = set()
    for r in run.resources:
        found |= tokens(r.inputs)
    for f in run.files:
        found |= tokens(f.content)
    assert not (found & WEAK), found & WEAK
    # The check reads the algorithm names where they are: the strong suite's are found.
    assert "ecp384" in found


def swanctl_trigger(values: dict[str, Any], machine: str = "ri-dev-hetzner-gw-swanctl") -> str:
    return run_offline(values).by_name(machine).inputs["triggers"][0]


def test_push_triggers_change_when_and_only_when_the_config_changes(mesh_runs: dict[str, OfflineRun]) -> None:
    base_values = shape("gcp", "azure", "hetzner", "proxmox")
    base = mesh_runs["all-four"].by_name("ri-dev-hetzner-gw-swanctl").inputs["triggers"][0]
    # Same program, same config: same trigger.
    assert swanctl_trigger(base_values) == base
    # More workers on every site: the gateway's swanctl.conf does not change.
    more_workers = copy.deepcopy(base_values)
    for site in more_workers["resinfra:sites"]:
        site["workers"] = 3
    assert swanctl_trigger(more_workers) == base
    # The Proxmox gateway moves to another public address: Hetzner's peer address changes.
    moved = copy.deepcopy(base_values)
    proxmox = next(s for s in moved["resinfra:sites"] if s["provider"] == "proxmox")
    proxmox.update(publicRange="203.0.113.32/28", publicGateway="203.0.113.33")
    assert swanctl_trigger(moved) != base
    # Removing a peer site removes a connection.
    assert swanctl_trigger(shape("gcp", "hetzner", "proxmox")) != base


def test_every_mesh_resource_uses_its_site_provider(run: OfflineRun) -> None:
    mesh = [r for r in run.resources if "resinfra:mesh:IpsecMesh" in run.ancestor_types(r) and r.custom]
    assert mesh
    for r in mesh:
        if r.type.startswith("pulumi:providers:"):
            continue
        assert "::default" not in r.provider, f"{r.urn} uses a default provider"
        if r.type.startswith("gcp:"):
            assert "ri-dev-gcp-provider" in r.provider
        if r.type.startswith("azure-native:"):
            assert "ri-dev-azure-provider" in r.provider
