"""What the clouds' APIs refuse that the stack config can hold, each rule with its source.

Two kinds of rule:

- :func:`check_cloud_rules` runs with every other config check (``config.load``): values no
  cloud would ever accept (an Azure admin name Azure reserves, a key type it cannot install).
- :func:`deployment_problems` covers values the committed example stacks hold as
  placeholders (documentation address ranges). A real deployment (``stack.main`` under the
  Pulumi engine) refuses them; ``resinfra plan``, ``render`` and the lab run the program
  offline and print them as a warning instead (:func:`placeholder_notes` adds what is
  accepted but cannot work).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from resinfra.config import AzureSite, GcpSite, HetznerSite, Problem, Provider, ProxmoxSite, StackConfig, key_path


@dataclass(frozen=True)
class ReservedRange:
    """An address range a cloud refuses, with what it is."""

    network: IPv4Network
    name: str


def _ranges(*entries: tuple[str, str]) -> tuple[ReservedRange, ...]:
    return tuple(ReservedRange(IPv4Network(cidr), name) for cidr, name in entries)


GCP_REFUSED_PEER_RANGES = _ranges(
    # terraform-provider-google, google/services/compute/resource_compute_vpn_tunnel.go:
    # validatePeerAddr refuses a tunnel's peer_ip inside invalidPeerAddrs ("RFC 5735"),
    # before any API call, so `pulumi preview` fails on it.
    ("0.0.0.0/8", "'this network', RFC 1122"),
    ("10.0.0.0/8", "private, RFC 1918"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private, RFC 1918"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "TEST-NET-1, documentation, RFC 5737"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private, RFC 1918"),
    ("198.18.0.0/15", "benchmarking, RFC 2544"),
    ("198.51.100.0/24", "TEST-NET-2, documentation, RFC 5737"),
    ("203.0.113.0/24", "TEST-NET-3, documentation, RFC 5737"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, and the broadcast address"),
)
"""Ranges the Google provider refuses as a VPN tunnel's ``peer_ip``.

Azure has no such rule: neither azure-native (no client-side validation) nor azurerm
(``local_network_gateway_resource.go``: ``gateway_address`` has no ValidateFunc) checks a
local network gateway's ``gatewayIpAddress``, and Azure documents local network gateways
with private addresses (site-to-site VPN over ExpressRoute private peering). An address no
internet route reaches is accepted there and the tunnel simply never comes up."""

DOCUMENTATION_RANGES = tuple(r for r in GCP_REFUSED_PEER_RANGES if "RFC 5737" in r.name)
"""RFC 5737's TEST-NETs: addresses for examples, never anyone's machines."""

AZURE_RESERVED_ADMIN_USERNAMES = frozenset(
    # Compute API, OSProfile.adminUsername ("Disallowed values", in pulumi-azure-native's
    # compute OSProfileArgs docstring, from azure-rest-api-specs).
    {
        "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1", "1", "123", "a",
        "actuser", "adm", "admin2", "aspnet", "backup", "console", "david", "guest", "john", "owner", "root",
        "server", "sql", "support", "support_388945a0", "sys", "test2", "test3", "user4", "user5",
    }
)  # fmt: skip
AZURE_SSH_KEY_TYPES = ("ssh-rsa", "ssh-ed25519")
"""learn.microsoft.com, "Detailed steps: Create and manage SSH keys for authentication to a
Linux VM in Azure", "Supported SSH key formats": SSH-2 RSA of at least 2048 bits and ED25519;
ECDSA is not supported (nor, by omission, the FIDO ``sk-`` types)."""
AZURE_MIN_RSA_BITS = 2048
USER_DATA_LIMITS = {
    # Hetzner Cloud API, create server: user_data "is limited to 32KiB".
    Provider.HETZNER: 32 * 1024,
    # Compute API, OSProfile.customData: "The maximum length of the binary array is 65535 bytes"
    # (pulumi-azure-native compute OSProfileArgs docstring).
    Provider.AZURE: 65535,
    # GCE metadata: a value may hold 256 KB (cloud.google.com, "About VM metadata", limits).
    Provider.GCP: 256 * 1024,
}
"""Largest user-data each cloud accepts, in bytes (Proxmox snippets have no such limit)."""
HETZNER_PUBLIC_GATEWAY = IPv4Address("172.31.1.1")
"""Hetzner Cloud API, networks ``add_route``: a route's destination "must not overlap ...
172.31.1.1", the gateway of every server's public interface."""


def check_cloud_rules(cfg: StackConfig, addresses_valid: bool) -> list[Problem]:
    """Values a cloud's API refuses whatever the deployment; empty when there are none.

    + addresses_valid: whether the address plan passed its own checks (the rules on address
      blocks need every block to exist)
    """
    problems = [*_azure_admin_problems(cfg), *_proxmox_ssh_problems(cfg)]
    return problems + _hetzner_route_problems(cfg) if addresses_valid else problems


def _azure_admin_problems(cfg: StackConfig) -> list[Problem]:
    """The Azure VMs' admin user and SSH key (``resinfra:adminUser``, ``resinfra:sshPublicKey``)."""
    if not any(isinstance(s, AzureSite) for s in cfg.sites):
        return []
    problems = []
    if cfg.admin_user in AZURE_RESERVED_ADMIN_USERNAMES:
        problems.append(
            Problem(
                key_path(["adminUser"]),
                f"Azure refuses {cfg.admin_user!r} as a VM's admin user name (a reserved name), and the stack has an Azure site",
                "use another name, e.g. the default resinfra",
            )
        )
    kind, bits = ssh_key_kind(cfg.ssh_public_key)
    # A line that is no OpenSSH key at all is reported by config.check_stack.
    if kind.startswith(("ssh-", "ecdsa-", "sk-")) and kind not in AZURE_SSH_KEY_TYPES:
        problems.append(
            Problem(
                key_path(["sshPublicKey"]),
                f"Azure installs only RSA (2048 bits or more) and ED25519 SSH keys, not {kind}, and the stack has an Azure site",
                "make an ED25519 key (ssh-keygen -t ed25519) and set its public half",
            )
        )
    elif kind == "ssh-rsa" and bits is not None and bits < AZURE_MIN_RSA_BITS:
        problems.append(
            Problem(
                key_path(["sshPublicKey"]),
                f"the RSA key has {bits} bits; Azure needs at least {AZURE_MIN_RSA_BITS}, and the stack has an Azure site",
                "make an ED25519 key (ssh-keygen -t ed25519) or an RSA key of 3072 bits or more",
            )
        )
    return problems


def ssh_key_kind(public_key: str) -> tuple[str, int | None]:
    """(key type, RSA modulus bits or None) of an OpenSSH public key line.

    Example: ``ssh_key_kind("ssh-ed25519 AAAA... me")`` is ``("ssh-ed25519", None)``.
    """
    kind, _, rest = public_key.partition(" ")
    if kind != "ssh-rsa":
        return kind, None
    try:
        blob = base64.b64decode(rest.split(" ")[0], validate=True)
        fields = []
        offset = 0
        for _ in range(3):  # string "ssh-rsa", mpint e, mpint n (RFC 4253, 6.6)
            (length,) = struct.unpack(">I", blob[offset : offset + 4])
            fields.append(blob[offset + 4 : offset + 4 + length])
            offset += 4 + length
    except (binascii.Error, struct.error):
        return kind, None
    return kind, int.from_bytes(fields[2], "big").bit_length()


def _hetzner_route_problems(cfg: StackConfig) -> list[Problem]:
    """A Hetzner site routes every other site's block to its gateway VM: none may hold 172.31.1.1."""
    from resinfra.addressing import block_of  # local: addressing imports this module's types

    if not any(isinstance(s, HetznerSite) for s in cfg.sites):
        return []
    hetzner = next(s for s in cfg.sites if isinstance(s, HetznerSite))
    problems = []
    for i, site in enumerate(cfg.sites):
        block = block_of(cfg, site)
        if site is not hetzner and HETZNER_PUBLIC_GATEWAY in block:
            problems.append(
                Problem(
                    key_path(["sites", i, "addressBlock" if site.address_block else "number"]),
                    f"address block {block} holds {HETZNER_PUBLIC_GATEWAY}, which Hetzner Cloud refuses in a network route's destination "
                    f"(its servers' public gateway), and the Hetzner site routes this block",
                    "give the site a block without 172.31.1.1 (another site number or addressBlock)",
                )
            )
    return problems


def _proxmox_ssh_problems(cfg: StackConfig) -> list[Problem]:
    """The provider overrides a node's SSH port only together with its address (bpg, ``ssh.node``: address is required)."""
    problems = []
    for i, site in enumerate(cfg.sites):
        if isinstance(site, ProxmoxSite) and site.node_address is None and site.node_ssh_port != 22:
            problems.append(
                Problem(
                    key_path(["sites", i, "nodeSshPort"]),
                    "a node's SSH port is overridden only together with its address (the provider's ssh.node needs both)",
                    "set nodeAddress too, or remove nodeSshPort",
                )
            )
    return problems


def proxmox_gateway_address(site: ProxmoxSite) -> IPv4Address | None:
    """The Proxmox site's gateway address (its gateway VM's, or a pair's VRRP address): what every peer's tunnel points at."""
    from resinfra.addressing import proxmox_public_hosts  # local: addressing imports this module's types

    hosts = proxmox_public_hosts(site)
    return hosts[0] if hosts else None


def refused_range(address: IPv4Address, ranges: tuple[ReservedRange, ...] = GCP_REFUSED_PEER_RANGES) -> ReservedRange | None:
    """The first of ``ranges`` holding ``address``, or None."""
    return next((r for r in ranges if address in r.network), None)


PUBLIC_RANGE_FIX = (
    "set publicRange and publicGateway to the public range routed to the Proxmox host's public bridge "
    "(addresses you own; the example stacks' 203.0.113.0/24 values are placeholders)"
)


def deployment_problems(cfg: StackConfig) -> list[Problem]:
    """Values a real deployment refuses although the example stacks hold them as placeholders.

    + cfg: a valid stack config

    A Proxmox gateway VM's public address is the peer address of every tunnel to its site:
    GCP's Classic VPN tunnel (``peer_ip``), Azure's local network gateway, the other strongSwan
    gateways. Inside one of :data:`GCP_REFUSED_PEER_RANGES` GCP refuses it, and nothing on the
    internet reaches it for the others.
    """
    has_gcp = any(isinstance(s, GcpSite) for s in cfg.sites)
    problems = []
    for i, site in enumerate(cfg.sites):
        if not isinstance(site, ProxmoxSite):
            continue
        address = proxmox_gateway_address(site)
        reserved = refused_range(address) if address is not None else None
        if reserved is None:
            continue
        holder = "the gateway pair's VRRP address" if site.gateways == 2 else "the gateway VM's address"
        where = f"{holder} {address} (the first of publicRange besides publicGateway) is in {reserved.network} ({reserved.name})"
        why = (
            "GCP refuses it as the peer address of this site's VPN tunnel (terraform-provider-google validatePeerAddr), and no peer can reach it over the internet"
            if has_gcp
            else "no peer can reach it over the internet, so no tunnel to this site comes up"
        )
        problems.append(Problem(key_path(["sites", i, "publicRange"]), f"{where}: {why}", PUBLIC_RANGE_FIX))
    return problems


def placeholder_notes(cfg: StackConfig) -> list[Problem]:
    """Placeholders a real deployment accepts but cannot use: admin ranges in documentation ranges.

    Configuration pushes connect over SSH from the deployer, which must be inside
    ``adminCidrs`` (``pushVia: public``); nobody's machine is in a TEST-NET.
    """
    notes = []
    for i, cidr in enumerate(cfg.admin_cidrs):
        network = IPv4Network(cidr)
        doc = next((r for r in DOCUMENTATION_RANGES if network.subnet_of(r.network)), None)
        if doc is not None:
            notes.append(
                Problem(
                    key_path(["adminCidrs", i]),
                    f"{network} is in {doc.network} ({doc.name}): no operator or CI runner is there, so SSH and the configuration pushes would be refused",
                    "list the public ranges your operators and CI runners connect from",
                )
            )
    return notes
