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

from resinfra.lab.clouds import crypto_of
from resinfra.mesh import crypto
from resinfra.mesh.plan import LinkPlan, plan_links
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
    """The mesh's RandomPasswords (the tooling VM has its own for tokens)."""
    return [r for r in run.of_type("random:index/randomPassword:RandomPassword") if "resinfra:mesh:IpsecMesh" in run.ancestor_types(r)]


def psk_values(run: OfflineRun) -> dict[tuple[str, str, int], str]:
    """PSK by (site a, site b, connection) from the RandomPassword resources."""
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
            "if_id": next((int(m[1]) for m in re.finditer(r"^\s+if_id_out = (\d+)$", block, flags=re.MULTILINE)), None),
        }
        if conns[match[1]]["if_id"] is not None:
            assert f"if_id_in = {conns[match[1]]['if_id']}" in block, "in and out on the same XFRM interface"
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


def links_of(run: OfflineRun) -> dict[str, LinkPlan]:
    return {link.name: link for link in plan_links(run.config, run.result.plan)}


# -- the properties ------------------------------------------------------------------------


def test_exactly_one_link_per_pair(run: OfflineRun) -> None:
    pairs = {f"{a}-{b}" for a, b in itertools.combinations(sites_of(run), 2)}
    names = [t["name"] for t in run.outputs["tunnels"]]
    assert sorted(names) == sorted(pairs)
    assert len(mesh_psks(run)) == sum(t["connections"] for t in run.outputs["tunnels"])


def test_both_ends_of_every_tunnel_exist_and_mirror_each_other(run: OfflineRun) -> None:
    views = ends(run)
    psks = psk_values(run)
    plans = links_of(run)
    for link in run.outputs["tunnels"]:
        a, b = (e["site"] for e in link["ends"])
        for tunnel in plans[link["name"]].tunnels:
            name = f"{link['name']}-{tunnel.index}"
            end_a, end_b = views[name, a], views[name, b]
            assert (end_a["local"], end_a["remote"]) == (end_b["remote"], end_b["local"]), name
            assert end_a["psk"] == end_b["psk"] == psks[a, b, tunnel.connection], f"{name}: both ends carry the connection's own PSK"
            assert len(end_a["psk"]) >= 32
            assert end_a["crypto"] == end_b["crypto"] == crypto.POLICY, name
            assert (end_a["local_ts"], end_a["remote_ts"]) == (end_b["remote_ts"], end_b["local_ts"]), f"{name}: mirrored selectors"
            assert end_a["secret_file"] and end_b["secret_file"]
    assert len(set(psks.values())) == len(psks), "a PSK per connection, never one shared key"


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


def check_azure_description(run: OfflineRun, d: dict[str, Any]) -> None:
    """Azure's description is what its gateway, local network gateways and connections receive."""
    peer = d["peerSite"]
    gateway = run.by_name("ri-dev-azure-vpn-gw")
    vnet = run.by_name("ri-dev-azure-vnet")
    pips = {ip.name: ip.outputs["ipAddress"] for ip in run.of_type("azure-native:network:PublicIPAddress") if "vpn-gw-pip" in ip.name}
    described = d["gateway"]
    assert described["asn"] == gateway.inputs["bgpSettings"]["asn"]
    assert described["activeActive"] is bool(gateway.inputs["activeActive"])
    assert described["vnetAddressSpace"] == vnet.inputs["addressSpace"]["addressPrefixes"]
    assert sorted(i["publicAddress"] for i in described["instances"]) == sorted(pips.values())
    declared_custom = {
        p["ipconfigurationId"].rsplit("-", 1)[-1]: p["customBgpIpAddresses"] for p in gateway.inputs["bgpSettings"].get("bgpPeeringAddresses", [])
    }
    for instance in described["instances"]:
        assert instance["customBgpAddresses"] == declared_custom.get(str(instance["index"]), [])
    for c in d["connections"]:
        conn = run.by_name(f"ri-dev-azure-conn-{peer}-{c['index']}")
        lng = run.by_name(f"ri-dev-azure-lng-{peer}-{c['index']}")
        assert conn.inputs["sharedKey"] == c["psk"]
        assert conn.inputs["ipsecPolicies"] == [d["ipsecPolicy"]]
        assert conn.inputs["connectionProtocol"] == "IKEv2" and conn.inputs["connectionType"] == "IPsec"
        assert conn.inputs["dpdTimeoutSeconds"] == d["dpdTimeoutSeconds"]
        assert conn.inputs["localNetworkGateway2"]["id"] == lng.id
        assert conn.inputs["enableBgp"] is c["enableBgp"]
        assert bool(conn.inputs.get("usePolicyBasedTrafficSelectors")) is c["usePolicyBasedTrafficSelectors"]
        assert lng.inputs["gatewayIpAddress"] == c["localNetworkGateway"]["gatewayIpAddress"]
        assert lng.inputs.get("localNetworkAddressSpace", {}).get("addressPrefixes", []) == c["localNetworkGateway"]["addressPrefixes"]
        bgp = c["localNetworkGateway"]["bgp"]
        assert lng.inputs.get("bgpSettings") == (None if bgp is None else {"asn": bgp["asn"], "bgpPeeringAddress": bgp["peeringAddress"]})
        custom = [(int(x["ipConfigurationId"].rsplit("-", 1)[-1]), x["customBgpIpAddress"]) for x in conn.inputs.get("gatewayCustomBgpIpAddresses", [])]
        assert custom == [(x["instance"], x["address"]) for x in c["customBgpAddresses"]]
        for instance, address in custom:
            assert address in declared_custom[str(instance)], "a connection names an address its instance carries"
    for t in d["tunnels"]:
        connection = next(c for c in d["connections"] if c["index"] == t["connection"])
        assert (t["peerAddress"], t["psk"]) == (connection["localNetworkGateway"]["gatewayIpAddress"], connection["psk"])
        assert t["localAddress"] in pips.values()
        if t["bgp"]:
            assert d["advertises"] == vnet.inputs["addressSpace"]["addressPrefixes"]
        else:
            assert connection["localNetworkGateway"]["addressPrefixes"] == t["remoteTrafficSelectors"]
            assert vnet.inputs["addressSpace"]["addressPrefixes"] == t["localTrafficSelectors"]


def check_gcp_description(run: OfflineRun, d: dict[str, Any]) -> None:
    """GCP's description is what its VPN gateways, tunnels, routes and Cloud Router receive."""
    peer = d["peerSite"]
    assert d["subnets"] == [run.by_name("ri-dev-gcp-subnet").inputs["ipCidrRange"]]
    for t in d["tunnels"]:
        i = t["index"]
        tunnel = run.by_name(f"ri-dev-gcp-tun-{peer}-{i}")
        assert tunnel.inputs["sharedSecret"] == t["psk"]
        assert tunnel.inputs["ikeVersion"] == d["ikeVersion"] == 2
        assert tunnel.inputs["cipherSuite"] == d["cipherSuite"]
        if t["bgp"]:
            bgp = t["bgp"]
            external = run.by_name(f"ri-dev-gcp-peer-{peer}")
            assert (tunnel.inputs["vpnGatewayInterface"], tunnel.inputs["peerExternalGatewayInterface"]) == (t["gatewayInterface"], t["peerInterface"])
            assert external.inputs["interfaces"][int(tunnel.inputs["peerExternalGatewayInterface"])]["ipAddress"] == t["peerAddress"]
            ha = run.by_name("ri-dev-gcp-vpn-gw").outputs["vpnInterfaces"]
            assert ha[int(tunnel.inputs["vpnGatewayInterface"])]["ipAddress"] == t["localAddress"]
            assert [i["ipAddress"] for i in d["gateway"]["interfaces"]] == [i["ipAddress"] for i in ha]
            interface = run.by_name(f"ri-dev-gcp-if-{peer}-{i}")
            router_peer = run.by_name(f"ri-dev-gcp-bgp-{peer}-{i}")
            assert interface.inputs["ipRange"] == f"{bgp['localAddress']}/30"
            assert ipaddress.IPv4Network(bgp["ipRange"]) == ipaddress.IPv4Interface(interface.inputs["ipRange"]).network
            assert (router_peer.inputs["peerIpAddress"], router_peer.inputs["peerAsn"]) == (bgp["peerAddress"], bgp["peerAsn"])
            assert router_peer.inputs["ipAddress"] == bgp["localAddress"]
            router = run.by_name("ri-dev-gcp-router").inputs["bgp"]
            assert router["asn"] == bgp["localAsn"] == d["cloudRouter"]["asn"]
            assert router["advertiseMode"] == d["cloudRouter"]["advertiseMode"]
            assert router["keepaliveInterval"] == d["cloudRouter"]["keepaliveIntervalSeconds"] == 60, "Azure's fixed 60/180 s BGP timers"
            assert d["advertises"] == [run.by_name("ri-dev-gcp-subnet").inputs["ipCidrRange"]]
        else:
            assert tunnel.inputs["peerIp"] == t["peerAddress"]
            assert run.by_name("ri-dev-gcp-cvpn-ip").outputs["address"] == t["localAddress"] == d["gateway"]["ipAddress"]
            assert (tunnel.inputs["localTrafficSelectors"], tunnel.inputs["remoteTrafficSelectors"]) == (
                t["localTrafficSelectors"],
                t["remoteTrafficSelectors"],
            )
    if d["routing"] == "static":
        declared = [r for r in run.of_type("gcp:compute/route:Route") if r.name.startswith(f"ri-dev-gcp-rt-{peer}-")]
        tunnels = {run.by_name(f"ri-dev-gcp-tun-{peer}-{t['index']}").id: t["index"] for t in d["tunnels"]}
        assert sorted((r.inputs["destRange"], r.inputs["priority"], tunnels[r.inputs["nextHopVpnTunnel"]]) for r in declared) == sorted(
            (r["destRange"], r["priority"], r["nextHopTunnel"]) for r in d["routes"]
        )


def test_azure_and_gcp_receive_exactly_the_description(run: OfflineRun) -> None:
    """The JSON descriptions (what the emulated ends are built from) equal the declared inputs."""
    descriptions = [json.loads(f.content) for f in run.files if f.purpose == "managed-ipsec"]
    assert descriptions or run.result.mesh is None or not any(s.provider in ("azure", "gcp") for s in run.config.sites)
    for d in descriptions:
        if d["cloud"] == "azure":
            check_azure_description(run, d)
        else:
            check_gcp_description(run, d)


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


def test_active_active_bgp_connections_name_both_instances(mesh_runs: dict[str, OfflineRun]) -> None:
    """Azure brings up a tunnel from each instance for every connection: each names both instances' BGP addresses."""
    run = mesh_runs["all-four-active-active"]
    for index in (0, 1):
        custom = run.by_name(f"ri-dev-azure-conn-gcp-{index}").inputs["gatewayCustomBgpIpAddresses"]
        assert [c["ipConfigurationId"].rsplit("/", 1)[-1] for c in custom] == ["ipconfig-0", "ipconfig-1"]
    single = mesh_runs["all-four"].by_name("ri-dev-azure-conn-gcp-0").inputs["gatewayCustomBgpIpAddresses"]
    assert [c["ipConfigurationId"].rsplit("/", 1)[-1] for c in single] == ["ipconfig-0"]


def azure_advertised(run: OfflineRun) -> list[ipaddress.IPv4Network]:
    """What an Azure VNet gateway with BGP advertises to its BGP peers, read from the declared
    resources: its VNet's address space and the prefixes of every local network gateway
    (Microsoft, "About BGP and VPN Gateway" FAQ; they cannot be filtered)."""
    prefixes = [p for v in run.of_type("azure-native:network:VirtualNetwork") for p in v.inputs["addressSpace"]["addressPrefixes"]]
    prefixes += [
        p for lng in run.of_type("azure-native:network:LocalNetworkGateway") for p in lng.inputs.get("localNetworkAddressSpace", {}).get("addressPrefixes", [])
    ]
    return [ipaddress.IPv4Network(p) for p in prefixes]


def test_gcp_routes_to_strongswan_sites_win_over_what_azure_advertises(run: OfflineRun) -> None:
    """GCP chooses the most specific route first (docs.cloud.google.com/vpc/docs/routes, "Routing
    order"): its routes to a strongSwan site must be more specific than any prefix Azure
    re-advertises to its Cloud Router, and cover exactly the peer's block (what the tunnel's
    selectors carry), or GCP's traffic to that site could leave through Azure and be dropped."""
    routes = run.of_type("gcp:compute/route:Route")
    tunnels = {t.id: t for t in run.of_type("gcp:compute/vPNTunnel:VPNTunnel")}
    advertised = azure_advertised(run) if run.of_type("gcp:compute/routerPeer:RouterPeer") else []
    by_tunnel: dict[str, list[ipaddress.IPv4Network]] = {}
    for route in routes:
        destination = ipaddress.IPv4Network(route.inputs["destRange"])
        for prefix in advertised:
            if prefix.overlaps(destination):
                assert destination.prefixlen > prefix.prefixlen, f"{route.name}: {destination} does not beat Azure's {prefix}"
        by_tunnel.setdefault(route.inputs["nextHopVpnTunnel"], []).append(destination)
    for tunnel_id, destinations in by_tunnel.items():
        (selector,) = tunnels[tunnel_id].inputs["remoteTrafficSelectors"]
        assert sorted(ipaddress.collapse_addresses(destinations)) == [ipaddress.IPv4Network(selector)], "the routes cover the peer's block exactly"
    if run.of_type("azure-native:network:LocalNetworkGateway") and routes and advertised:
        assert any(p.overlaps(ipaddress.IPv4Network(r.inputs["destRange"])) for r in routes for p in advertised), "the stack has the conflict"


def test_strongswan_ends_accept_both_instances_of_an_active_active_azure_gateway(mesh_runs: dict[str, OfflineRun]) -> None:
    """Azure's active-active instances each bring up a tunnel for the connection and send over
    both: a strongSwan gateway has a route-based connection to each instance address, with the
    connection's one key, the same selectors and its own XFRM interface."""
    run = mesh_runs["all-four-active-active"]
    instances = sorted(ip.outputs["ipAddress"] for ip in run.of_type("azure-native:network:PublicIPAddress") if "vpn-gw-pip" in ip.name)
    assert len(instances) == 2
    for site in ("hetzner", "proxmox"):
        swanctl = next(f.content for f in run.files if f.purpose == "swanctl" and f.machine == f"ri-dev-{site}-gw")
        conns = swanctl_connections(swanctl)
        pair = [conns[f"azure-{site}-{i}"] for i in (0, 1)]
        assert sorted(c["remote"] for c in pair) == instances
        assert pair[0]["psk"] == pair[1]["psk"] == run.by_name(f"ri-dev-azure-conn-{site}-0").inputs["sharedKey"]
        assert (pair[0]["local_ts"], pair[0]["remote_ts"]) == (pair[1]["local_ts"], pair[1]["remote_ts"])
        if_ids = [c["if_id"] for c in pair]
        assert None not in if_ids and len(set(if_ids)) == 2
        assert all(c["if_id"] is None for name, c in conns.items() if not name.startswith("azure-")), "other tunnels stay policy-based"
        # One local network gateway and one connection on Azure's side for that peer.
        assert [r.name for r in run.of_type("azure-native:network:VirtualNetworkGatewayConnection") if f"-conn-{site}-" in r.name] == [
            f"ri-dev-azure-conn-{site}-0"
        ]
        # The gateway gets those XFRM interfaces before charon loads the tunnels.
        push = run.by_name(f"ri-dev-{site}-gw-swanctl").inputs["stdin"]
        for if_id in if_ids:
            assert f"if_id {if_id}" in push
        assert push.index("systemctl restart resinfra-xfrm.service") < push.index("swanctl --load-all")
    plain = mesh_runs["all-four"]
    for site in ("hetzner", "proxmox"):
        push = plain.by_name(f"ri-dev-{site}-gw-swanctl").inputs["stdin"]
        assert "xfrm" not in push and "if_id" not in push


def test_azure_connections_are_created_one_after_another(run: OfflineRun) -> None:
    """Azure serialises operations on a VNet gateway (409 AnotherOperationInProgress, retried
    only three times by azure-native): its connections form one chain of dependencies."""
    connections = run.of_type("azure-native:network:VirtualNetworkGatewayConnection")
    urns = {c.urn for c in connections}
    follows = {c.urn: [d for d in c.dependencies if d in urns] for c in connections}
    firsts = [urn for urn, deps in follows.items() if not deps]
    assert len(firsts) == (1 if connections else 0), f"{len(firsts)} connections start at once"
    assert all(len(deps) <= 1 for deps in follows.values())
    followed = [d for deps in follows.values() for d in deps]
    assert len(set(followed)) == len(followed), "no connection has two successors: a single chain"


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
