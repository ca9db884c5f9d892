"""Rules across keys (:func:`check_stack`): duplicates, the mesh's ASNs and names, admin CIDRs, the healer, each site and its images.

Each names the exact key it is about; the address overlaps and the clouds' own rules are in
:mod:`resinfra.addressing` and :mod:`resinfra.cloud_rules`, which :func:`check_stack` calls.
"""

from __future__ import annotations

import ipaddress
import re

from resinfra.config.models import (
    AZURE_DEFAULT_ASN,
    AZURE_RESERVED_ASNS,
    HEALER_BACKEND_SCHEMES,
    HETZNER_NETWORK_ZONES,
    PRIVATE_ASN_16,
    PRIVATE_ASN_32,
    AzureImages,
    AzureSite,
    GcpSite,
    HealerConfig,
    HetznerImages,
    HetznerSite,
    ImageMode,
    ImageRole,
    Provider,
    ProxmoxImages,
    ProxmoxSite,
    Site,
    StackConfig,
    is_rfc1918,
)
from resinfra.config.problems import Problem, key_path


def check_stack(cfg: StackConfig) -> list[Problem]:
    """Rules that span several keys; empty when the stack is valid.

    + cfg: a structurally valid stack config

    Example: two sites with number 1 give a problem keyed ``resinfra:sites[1].number``.
    """
    from resinfra import addressing, cloud_rules, naming  # local: they import the config package's types

    problems: list[Problem] = []
    supernet = cfg.supernet_network

    if not is_rfc1918(supernet):
        problems.append(Problem(key_path(["supernet"]), f"{supernet} is not a private range", "use a range from 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"))
    if cfg.site_prefix_length <= supernet.prefixlen:
        problems.append(
            Problem(
                key_path(["sitePrefixLength"]),
                f"/{cfg.site_prefix_length} is not smaller than the supernet {supernet}",
                f"use a prefix length greater than {supernet.prefixlen}",
            )
        )
        return problems

    problems += _check_admin_cidrs(cfg)

    if not re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( .*)?$", cfg.ssh_public_key):
        problems.append(
            Problem(
                key_path(["sshPublicKey"]),
                "not an OpenSSH public key",
                "paste the single line of your ~/.ssh/id_ed25519.pub (starts with ssh-ed25519)",
            )
        )

    seen_names: dict[str, int] = {}
    seen_numbers: dict[int, int] = {}
    seen_providers: dict[Provider, int] = {}
    max_number = 2 ** (cfg.site_prefix_length - supernet.prefixlen) - 1
    for i, site in enumerate(cfg.sites):
        if site.name in seen_names:
            problems.append(
                Problem(
                    key_path(["sites", i, "name"]),
                    f"site name {site.name!r} is also used by resinfra:sites[{seen_names[site.name]}]",
                    "give every site its own name",
                )
            )
        seen_names.setdefault(site.name, i)
        if site.number in seen_numbers:
            problems.append(
                Problem(
                    key_path(["sites", i, "number"]),
                    f"site number {site.number} is also used by resinfra:sites[{seen_numbers[site.number]}]",
                    "give every site its own number; numbers pick address blocks and must never be reused",
                )
            )
        seen_numbers.setdefault(site.number, i)
        if site.number > max_number:
            problems.append(
                Problem(
                    key_path(["sites", i, "number"]),
                    f"site number {site.number} has no address block: {supernet} holds {max_number} sites of /{cfg.site_prefix_length}",
                    f"use a number from 1 to {max_number}, or a larger resinfra:supernet, or a larger resinfra:sitePrefixLength",
                )
            )
        provider = Provider(site.provider)
        if provider in seen_providers:
            problems.append(
                Problem(
                    key_path(["sites", i, "provider"]),
                    f"a second {provider.value} site (first: resinfra:sites[{seen_providers[provider]}]) is not supported yet: the mesh has no {provider.value}-to-{provider.value} link kind",
                    "use one site per provider",
                )
            )
        seen_providers.setdefault(provider, i)
        problems += _check_site(cfg, i, site)
        problems += [Problem(key_path(["sites", i, "name"]), msg, fix) for msg, fix in naming.check_names(cfg.prefix, site)]

    if cfg.tooling.site is not None and cfg.tooling.site not in seen_names:
        problems.append(
            Problem(
                key_path(["tooling", "site"]),
                f"no site is named {cfg.tooling.site!r}",
                f"use one of {', '.join(s.name for s in cfg.sites)}, or leave it unset for the Hetzner site",
            )
        )

    asn_owner: dict[int, int] = {}
    for i, site in enumerate(cfg.sites):
        if isinstance(site, GcpSite | AzureSite):
            if site.asn in asn_owner:
                problems.append(
                    Problem(
                        key_path(["sites", i, "asn"]),
                        f"ASN {site.asn} is also used by resinfra:sites[{asn_owner[site.asn]}]",
                        "give every BGP speaker its own private ASN",
                    )
                )
            asn_owner.setdefault(site.asn, i)

    problems += _check_mesh(cfg)
    problems += _check_healer(cfg.healer)

    # Overlap checks after duplicate site numbers would only repeat those problems.
    addresses_valid = False
    if not problems:
        problems += addressing.check_addresses(cfg)
        addresses_valid = not problems
    problems += cloud_rules.check_cloud_rules(cfg, addresses_valid)
    return problems


def _check_mesh(cfg: StackConfig) -> list[Problem]:
    """Rules of the tunnels between sites: peer ASNs each cloud accepts, APIPA room, names."""
    from resinfra import addressing, naming  # local: both import the config package's types

    problems: list[Problem] = []
    azure = [(i, s) for i, s in enumerate(cfg.sites) if isinstance(s, AzureSite)]
    gcp = [(i, s) for i, s in enumerate(cfg.sites) if isinstance(s, GcpSite)]
    if azure:
        for i, site in gcp:
            # Azure refuses a local network gateway whose ASN it reserves for itself.
            if site.asn in AZURE_RESERVED_ASNS:
                problems.append(
                    Problem(
                        key_path(["sites", i, "asn"]),
                        f"ASN {site.asn} is reserved by Azure (65515, 65517-65520), and the Azure site peers with this Cloud Router over BGP",
                        "use another private ASN, e.g. the default 64514",
                    )
                )
    limit = addressing.max_bgp_site_number()
    blocks = 2 ** (cfg.site_prefix_length - cfg.supernet_network.prefixlen) - 1
    for i, site in [*azure, *gcp]:
        # A number without an address block is reported already.
        if azure and gcp and limit < site.number <= blocks:
            problems.append(
                Problem(
                    key_path(["sites", i, "number"]),
                    f"site number {site.number} is too high for the Azure-GCP BGP link: its APIPA addresses must come from Azure's 169.254.21.0-169.254.22.255, which holds the links of site numbers 1 to {limit}",
                    f"give the Azure and GCP sites numbers from 1 to {limit}",
                )
            )
    # Only managed gateways get cloud resources named after their peers. Names already too
    # long for the site's own resources are reported once, by check_names.
    named = [s for s in cfg.sites if not naming.check_names(cfg.prefix, s)]
    for i, site in [*azure, *gcp]:
        if site not in named:
            continue
        peers = [s for s in named if s.name != site.name]
        problems += [Problem(key_path(["sites", i, "name"]), msg, fix) for msg, fix in naming.check_mesh_names(cfg.prefix, site, peers)]
    return problems


NOT_PUBLIC_IPV4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
        "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
    )
)  # fmt: skip
"""IPv4 ranges that are not globally reachable (IANA IPv4 Special-Purpose Address Registry,
https://www.iana.org/assignments/iana-ipv4-special-registry/): SSH open to them is not open to the internet."""
PUBLIC_IPV4_ADDRESSES = 2**32 - sum(n.num_addresses for n in NOT_PUBLIC_IPV4)


def _overlap(a: ipaddress.IPv4Network, b: ipaddress.IPv4Network) -> int:
    return a.num_addresses if a.subnet_of(b) else b.num_addresses if b.subnet_of(a) else 0


def public_ipv4_coverage(cidrs: list[str]) -> tuple[int, list[ipaddress.IPv4Network]]:
    """How many public IPv4 addresses ``cidrs`` cover together, and the public /8-or-wider blocks among them.

    Overlaps count once (the networks are collapsed first). Example:
    ``public_ipv4_coverage(["0.0.0.0/1", "128.0.0.0/1"])`` covers every public address.
    """
    networks = list(ipaddress.collapse_addresses(ipaddress.IPv4Network(c, strict=False) for c in cidrs))
    covered = 0
    for net in networks:
        # Two CIDR blocks are nested or disjoint, and the special-purpose blocks are disjoint from each other.
        covered += net.num_addresses - sum(_overlap(net, p) for p in NOT_PUBLIC_IPV4)
    wide = [n for n in networks if n.prefixlen <= 8 and not any(n.subnet_of(p) for p in NOT_PUBLIC_IPV4)]
    return covered, wide


def _too_wide(covered: int, wide: list[ipaddress.IPv4Network], max_share: float) -> bool:
    return bool(wide) or covered / PUBLIC_IPV4_ADDRESSES > max_share


def _check_admin_cidrs(cfg: StackConfig) -> list[Problem]:
    """adminCidrs judged together: the public address space they open SSH to, not the prefix of one entry."""
    if cfg.allow_ssh_from_anywhere:
        return []
    covered, wide = public_ipv4_coverage(list(cfg.admin_cidrs))
    share = covered / PUBLIC_IPV4_ADDRESSES
    if not _too_wide(covered, wide, cfg.admin_cidrs_max_share):
        return []
    what = f"{', '.join(map(str, wide))} {'is' if len(wide) == 1 else 'are'} public /8 or wider" if wide else ""
    amount = f"{'together they' if len(cfg.admin_cidrs) > 1 else 'it'} open{'s' * (len(cfg.admin_cidrs) == 1)} SSH on every machine to {share:.2%} of the public IPv4 space ({covered:,} addresses)"
    # The key of the one entry that is too wide by itself, else the list's (the entries are too wide together).
    alone = next((i for i, c in enumerate(cfg.admin_cidrs) if _too_wide(*public_ipv4_coverage([c]), cfg.admin_cidrs_max_share)), None)
    return [
        Problem(
            key_path(["adminCidrs"] if alone is None else ["adminCidrs", alone]),
            "; ".join(x for x in (what, amount) if x) + f", over adminCidrsMaxShare ({cfg.admin_cidrs_max_share:.4%})" * (share > cfg.admin_cidrs_max_share),
            "list your office or VPN ranges, or set resinfra:allowSshFromAnywhere to true if you really mean it",
        )
    ]


def _check_healer(healer: HealerConfig) -> list[Problem]:
    """The healer's backend must be one the tooling VM can reach; its backoff must not be shorter than its cooldown."""
    problems: list[Problem] = []
    url = healer.backend_url
    if url is not None and not url.startswith(HEALER_BACKEND_SCHEMES):
        local = url.startswith("file://")
        problems.append(
            Problem(
                key_path(["healer", "backendUrl"]),
                f"{url!r} is {'a backend on one machine only' if local else 'not a Pulumi backend URL'}: the healer on the tooling VM runs the same stack",
                "use the shared backend the stack lives in (gs://bucket, azblob://container, s3://bucket or https://api.pulumi.com), or leave it unset to deploy no healer",
            )
        )
    if healer.max_backoff_seconds < healer.cooldown_seconds:
        problems.append(
            Problem(
                key_path(["healer", "maxBackoffSeconds"]),
                f"{healer.max_backoff_seconds} is shorter than cooldownSeconds ({healer.cooldown_seconds})",
                "give maxBackoffSeconds at least the cooldown",
            )
        )
    return problems


def _private_asn(asn: int) -> bool:
    return asn in PRIVATE_ASN_16 or asn in PRIVATE_ASN_32


HCLOUD_SELECTOR_TERM = re.compile(r"^!?[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?((==|!=|=)([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?)?$")
"""One term of an hcloud label selector (``key``, ``!key``, ``key=value``, ``key!=value``)."""
ROLE_LABEL = "resinfra-role"
"""Label of an image's role: the program selects hcloud snapshots by it."""


def image_roles(cfg: StackConfig, site: Site) -> list[ImageRole]:
    """The roles of the machines a site runs: workers, a gateway VM where the cloud runs no VPN gateway, the tooling VM on its site."""
    roles: list[ImageRole] = ["worker"]
    if site.provider in (Provider.HETZNER, Provider.PROXMOX):
        roles.append("gateway")
    if site.name == cfg.tooling_site:
        roles.append("tooling")
    return roles


def _check_images(cfg: StackConfig, i: int, site: Site) -> list[Problem]:
    """A site's ``images``: an hcloud selector resinfra can extend, and a lookup for every role in packer mode."""
    problems: list[Problem] = []
    images = site.images
    key = ["sites", i, "images"]
    if isinstance(images, HetznerImages) and images.selector is not None:
        terms = [term.strip() for term in images.selector.split(",")]
        bad = [term for term in terms if not HCLOUD_SELECTOR_TERM.match(term)]
        if bad:
            problems.append(
                Problem(
                    key_path([*key, "selector"]),
                    f"{bad[0]!r} is not a label selector term",
                    "write terms like resinfra-build=20261126120000, separated by commas",
                )
            )
        elif any(term.lstrip("!").startswith(ROLE_LABEL) for term in terms):
            problems.append(Problem(key_path([*key, "selector"]), f"resinfra adds {ROLE_LABEL}=<role> for each role itself", f"remove the {ROLE_LABEL} term"))
    if images.mode is not ImageMode.PACKER:
        return problems
    missing = [role for role in image_roles(cfg, site) if role not in images.overrides]
    if isinstance(images, AzureImages) and missing and images.resource_group is None:
        problems.append(
            Problem(
                key_path([*key, "resourceGroup"]),
                "missing: in packer mode the images are looked up in a resource group",
                "set it to the resource group the Packer build wrote to (images/azure, variable resource_group)",
            )
        )
    if isinstance(images, ProxmoxImages):
        untemplated = [role for role in missing if role not in images.templates]
        if untemplated:
            problems.append(
                Problem(
                    key_path([*key, "templates"]),
                    f"no template for the {' and '.join(untemplated)} role{'s' if len(untemplated) > 1 else ''} in packer mode",
                    "add '<role>: <VM id>' for each with the ids images/proxmox gave the templates (variable template_vm_ids)",
                )
            )
    return problems


def _check_site(cfg: StackConfig, i: int, site: Site) -> list[Problem]:
    problems: list[Problem] = _check_images(cfg, i, site)
    if isinstance(site, GcpSite):
        if not site.zone.startswith(site.region + "-"):
            problems.append(
                Problem(
                    key_path(["sites", i, "zone"]), f"zone {site.zone} is not in region {site.region}", f"use a zone of {site.region}, e.g. {site.region}-a"
                )
            )
        if not _private_asn(site.asn):
            problems.append(
                Problem(
                    key_path(["sites", i, "asn"]),
                    f"ASN {site.asn} is not a private ASN",
                    "use 64512-65534 or 4200000000-4294967294 (Cloud Router requires a private ASN)",
                )
            )
    if isinstance(site, AzureSite) and site.asn != AZURE_DEFAULT_ASN and (site.asn in AZURE_RESERVED_ASNS or not _private_asn(site.asn)):
        problems.append(
            Problem(
                key_path(["sites", i, "asn"]),
                f"ASN {site.asn} is reserved by Azure or not private",
                "use 65515 (Azure's default) or a private ASN outside 65517-65520",
            )
        )
    if isinstance(site, HetznerSite) and HETZNER_NETWORK_ZONES[site.location] != site.network_zone:
        problems.append(
            Problem(
                key_path(["sites", i, "networkZone"]),
                f"location {site.location} is in network zone {HETZNER_NETWORK_ZONES[site.location]}, not {site.network_zone}",
                f"set networkZone to {HETZNER_NETWORK_ZONES[site.location]}",
            )
        )
    if isinstance(site, ProxmoxSite):
        rng = ipaddress.IPv4Network(site.public_range)
        gw = ipaddress.IPv4Address(site.public_gateway)
        if gw not in rng:
            problems.append(
                Problem(key_path(["sites", i, "publicGateway"]), f"{gw} is not inside publicRange {rng}", "use the router address of the public range")
            )
        elif is_rfc1918(rng):
            problems.append(
                Problem(key_path(["sites", i, "publicRange"]), f"{rng} is a private range", "use the public range routed to the Proxmox host's public bridge")
            )
    return problems
