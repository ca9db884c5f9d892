"""Typed stack configuration under the ``resinfra:`` namespace, validated before anything is declared.

Every problem is reported with the full config key path (``resinfra:sites[2].machineType``)
and how to fix it. Structural rules (types, unknown keys, bounds) live on the pydantic
models; rules that span several keys (overlaps, duplicates, derived names) live in
:func:`check_stack` so each can name the exact key it is about.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel

NAMESPACE = "resinfra"
SECRET_KEYS = frozenset({"sshPrivateKey"})
"""Secret ``resinfra:*`` keys: never part of the validated model (so never in a message or
repr); the program reads them as Pulumi secrets. Each must be present."""
OPTIONAL_SECRET_KEYS = frozenset({"notificationWebhookUrl", "healerEnvironment", "healerGoogleCredentials", "hetznerFailoverToken"})
"""Secret ``resinfra:*`` keys that may be absent; handled like :data:`SECRET_KEYS` otherwise."""
FAILOVER_TOKEN_KEY = "hetznerFailoverToken"
"""The Hetzner Cloud API token a Hetzner site's gateway pair moves its Floating IP and network routes with:
required once a Hetzner site has ``gateways: 2`` (:func:`conditional_secret_keys`)."""
URL_SECRET_KEYS = frozenset({"notificationWebhookUrl"})
PROVIDER_SECRET_KEYS = frozenset(
    {
        "hcloud:token",  # pulumi_hcloud/config/vars.py: token (HCLOUD_TOKEN)
        "gcp:credentials",  # pulumi_gcp/config/vars.py: credentials (a service-account key)
        "gcp:accessToken",
        "azure-native:clientSecret",  # pulumi_azure_native/config/vars.py: client_secret
        "azure-native:clientCertificatePassword",
        "proxmoxve:password",  # pulumi_proxmoxve/config/vars.py: password, api_token
        "proxmoxve:apiToken",
    }
)
"""Provider credentials in a stack file: they belong there only encrypted (``secure:``)."""
"""Secret keys whose value must be an http(s) URL (checked without ever echoing the value)."""
HEALER_ENVIRONMENT_NAMES = frozenset(
    {
        # Hetzner, Azure (a service principal), Proxmox: the providers read these when their config keys are unset.
        "HCLOUD_TOKEN",
        "ARM_CLIENT_ID",
        "ARM_CLIENT_SECRET",
        "ARM_TENANT_ID",
        "ARM_SUBSCRIPTION_ID",
        "PROXMOX_VE_ENDPOINT",
        "PROXMOX_VE_API_TOKEN",
        "PROXMOX_VE_USERNAME",
        "PROXMOX_VE_PASSWORD",
        # Backends and secrets providers other than GCS/Cloud KMS (those use healerGoogleCredentials).
        "PULUMI_CONFIG_PASSPHRASE",
        "PULUMI_ACCESS_TOKEN",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_KEY",
        "AZURE_KEYVAULT_AUTH_VIA_CLI",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    }
)
"""Variables ``resinfra:healerEnvironment`` may set for the healer's pulumi runs (an allow-list: nothing else reaches its environment)."""

MIN_WORKERS = 1
MAX_WORKERS = 100
"""Workers per site. The worker subnet is a /24 and workers start at host offset 10."""

RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def is_rfc1918(network: str | ipaddress.IPv4Network) -> bool:
    """Whether ``network`` lies in the RFC 1918 private ranges (``is_private`` also
    counts documentation ranges, which are fine as example public addresses)."""
    net = ipaddress.IPv4Network(network)
    return any(net.subnet_of(r) for r in RFC1918)


DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")

# Private ASN ranges (RFC 6996) that both GCP Cloud Router and Azure VPN gateways accept.
PRIVATE_ASN_16 = range(64512, 65535)
PRIVATE_ASN_32 = range(4200000000, 4294967295)
# Azure reserves these for its own use (learn.microsoft.com: "VPN Gateway BGP", "Which ASNs can I use").
AZURE_RESERVED_ASNS = frozenset({65515, 65517, 65518, 65519, 65520})
AZURE_DEFAULT_ASN = 65515


class Provider(enum.StrEnum):
    """The clouds a site can live on."""

    GCP = "gcp"
    AZURE = "azure"
    HETZNER = "hetzner"
    PROXMOX = "proxmox"


@dataclass(frozen=True)
class Problem:
    """One invalid config value: where it is, what is wrong, how to fix it."""

    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}. Fix: {self.fix}."


class ConfigError(Exception):
    """The stack configuration is invalid; nothing has been declared."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"invalid stack configuration ({len(self.problems)} {noun}):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _ipv4_network(value: str) -> str:
    ipaddress.IPv4Network(value, strict=True)
    return value


def _ipv4_address(value: str) -> str:
    ipaddress.IPv4Address(value)
    return value


def _host_name_or_ipv4(value: str) -> str:
    """A DNS name (labels of letters, digits and '-') or an IPv4 address."""
    if re.fullmatch(r"[0-9.]+", value):
        ipaddress.IPv4Address(value)
    elif not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", value):
        raise ValueError("not a host name or IPv4 address")
    return value


Cidr = Annotated[str, AfterValidator(_ipv4_network)]
"""An IPv4 network in CIDR notation with no host bits set; kept as text."""
IpAddress = Annotated[str, AfterValidator(_ipv4_address)]
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL.pattern, min_length=1, max_length=30)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=True,
    )


class SiteBase(_Model):
    """Settings every site has, whatever its provider."""

    name: DnsLabel
    """Short site name; part of every resource and host name on the site."""
    number: int = Field(ge=1)
    """Stable site number: picks the site's address block. Never reuse or change it."""
    workers: int = Field(default=2, ge=MIN_WORKERS, le=MAX_WORKERS)
    """Number of worker VMs."""
    address_block: Cidr | None = None
    """Explicit address block (a /23 or larger inside the supernet) instead of the one
    the site number picks; for adopting an existing range."""


class ImageMode(enum.StrEnum):
    """Where a site's machines get their role's software from."""

    STOCK = "stock"
    """Stock Ubuntu 24.04 LTS: cloud-init runs the role's provisioning (images/provision) at first boot."""
    PACKER = "packer"
    """Images built from images/ with that provisioning baked in: the user-data only sets up the machine itself."""


ImageRole = Literal["worker", "gateway", "tooling"]
"""Roles that boot from an image (every role runs on a machine)."""
ManagedGatewayImageRole = Literal["worker", "tooling"]
"""Roles of machines on a site whose VPN gateway is managed by the cloud (no gateway VM)."""
DEFAULT_IMAGE_SET = "resinfra"
"""The Packer templates' default ``image_name``."""


class SiteImagesBase(_Model):
    """Which images a site's machines boot (``resinfra:sites[i].images``)."""

    mode: ImageMode = ImageMode.STOCK
    name: DnsLabel = DEFAULT_IMAGE_SET
    """Image set name the Packer build was given (``image_name``): part of every image's name or label."""


class GcpImages(SiteImagesBase):
    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")] | None = None
    """Project holding the image families; the site's project when unset."""
    overrides: dict[ManagedGatewayImageRole, str] = Field(default_factory=dict)
    """Per role, an image to boot instead (``projects/P/global/images/NAME`` or ``.../family/F``)."""


class AzureImages(SiteImagesBase):
    resource_group: Annotated[str, Field(pattern=r"^[-\w.()]{1,89}[-\w()]$")] | None = None
    """Resource group holding the images (Packer's ``resource_group``); required in packer mode."""
    gallery: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.]{0,78}[A-Za-z0-9]$")] | None = None
    """Azure Compute Gallery in that group: boot its image definitions' latest versions instead of managed images."""
    overrides: dict[ManagedGatewayImageRole, Annotated[str, Field(pattern=r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/.+$")]] = (
        Field(default_factory=dict)
    )
    """Per role, the resource id of an image (managed image, gallery image or gallery image version) to boot instead."""


class HetznerImages(SiteImagesBase):
    selector: str | None = None
    """Extra hcloud label selector the snapshots must match (e.g. ``resinfra-build=20261126120000`` to pin a build)."""
    overrides: dict[ImageRole, str] = Field(default_factory=dict)
    """Per role, an hcloud image name or id to boot instead."""


class ProxmoxImages(SiteImagesBase):
    templates: dict[ImageRole, int] = Field(default_factory=dict)
    """Per role, the VM id of the template images/proxmox built (its ``template_vm_ids``); needed in packer mode."""
    overrides: dict[ImageRole, int] = Field(default_factory=dict)
    """Per role, the VM id of a template to clone instead, in either mode."""


class GcpSite(SiteBase):
    provider: Literal[Provider.GCP]
    images: GcpImages = Field(default_factory=GcpImages)
    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    region: Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+[0-9]+$")]
    zone: Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")]
    machine_type: str = "e2-small"
    asn: int = 64514
    """ASN of the site's Cloud Router."""


class AzureSite(SiteBase):
    provider: Literal[Provider.AZURE]
    images: AzureImages = Field(default_factory=AzureImages)
    location: Annotated[str, Field(pattern=r"^[a-z0-9]+$")]
    resource_group: Annotated[str, Field(pattern=r"^[-\w.()]{1,89}[-\w()]$")]
    vm_size: str = "Standard_B1s"
    gateway_sku: Literal["VpnGw1AZ", "VpnGw2AZ", "VpnGw3AZ", "VpnGw4AZ", "VpnGw5AZ"] = "VpnGw1AZ"
    gateway_zones: list[Literal["1", "2", "3"]] = Field(default_factory=lambda: ["1", "2", "3"])
    """Availability zones of the gateway's public addresses; empty where the region has none."""
    active_active: bool = False
    """Two gateway instances and two public addresses (Azure's 99.99 % configuration)."""
    asn: int = AZURE_DEFAULT_ASN
    """ASN of the VNet gateway."""


GatewayCount = Literal[1, 2]
"""How many strongSwan gateway VMs a Hetzner or Proxmox site runs (``gateways``)."""
GATEWAY_COUNTS = (1, 2)


HETZNER_NETWORK_ZONES = {"fsn1": "eu-central", "nbg1": "eu-central", "hel1": "eu-central", "ash": "us-east", "hil": "us-west", "sin": "ap-southeast"}


class HetznerSite(SiteBase):
    provider: Literal[Provider.HETZNER]
    images: HetznerImages = Field(default_factory=HetznerImages)
    location: Literal["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]
    network_zone: Literal["eu-central", "us-east", "us-west", "ap-southeast"]
    server_type: str = "cx23"
    gateway_server_type: str | None = None
    """Server type of the gateway VM(s); ``serverType`` when unset."""
    gateways: GatewayCount = 1
    """strongSwan gateway VMs: 1, or 2 sharing the site's tunnels (keepalived moves a Floating IP and the network routes)."""


class ProxmoxSite(SiteBase):
    provider: Literal[Provider.PROXMOX]
    images: ProxmoxImages = Field(default_factory=ProxmoxImages)
    node: DnsLabel
    """Proxmox VE node that hosts the site's VMs."""
    template_vm_id: int = Field(ge=100, le=999_999_999)
    """VM id of a cloud-init enabled Ubuntu 24.04 template to clone."""
    vm_id_base: int = Field(default=4000, ge=100, le=999_999_000)
    """First VM id of the site: gateway = base, tooling = base+1, worker k = base+9+k."""
    public_bridge: str = "vmbr0"
    private_bridge: str = "vmbr1"
    public_range: Cidr
    """Public address range routed to the public bridge."""
    public_gateway: IpAddress
    """Router of the public range (the VMs' default gateway)."""
    datastore: str = "local-lvm"
    """Datastore for the VM disks."""
    snippets_datastore: str = "local"
    """Datastore with the 'snippets' content type, for cloud-init user-data."""
    node_address: Annotated[str, AfterValidator(_host_name_or_ipv4)] | None = None
    """Address the provider's SSH connections to the node use (snippet uploads, the datacenter
    firewall check); unset: the address the Proxmox API lists for the node."""
    node_ssh_port: int = Field(default=22, ge=1, le=65535)
    """SSH port of ``nodeAddress``."""
    cores: int = Field(default=2, ge=1, le=128)
    memory_mb: int = Field(default=2048, ge=512, le=1_048_576)
    gateways: GatewayCount = 1
    """strongSwan gateway VMs: 1, or 2 sharing the site's tunnels (VRRP addresses on both bridges)."""


SiteConfig = Annotated[
    GcpSite | AzureSite | HetznerSite | ProxmoxSite,
    Field(discriminator="provider"),
]


class ToolingConfig(_Model):
    """The tooling VM: where it runs and how big it is."""

    site: DnsLabel | None = None
    """Name of the site that hosts it: the Hetzner site when unset, else the first site."""
    size: str | None = None
    """Provider-specific size (GCP machine type, Azure VM size, Hetzner server type);
    the site's worker size when unset. On Proxmox the site's cores and memory apply."""
    latency_threshold_ms: int = Field(default=250, ge=1, le=10_000)
    """Round trip between two sites above which CrossSiteLatencyHigh fires."""


LIMIT_PATTERN = r"^([0-9]+|([0-9]|[1-9][0-9]|100)%)$"
"""``maxUnhealthy``: a count of machines (``2``) or a percentage (``34%``)."""


def _limit_text(value: Any) -> Any:
    # YAML gives a bare count as an int; keep one text form for both.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Limit = Annotated[str, BeforeValidator(_limit_text), Field(pattern=LIMIT_PATTERN)]
HEALER_BACKEND_SCHEMES = ("gs://", "azblob://", "s3://", "https://")


class HealerConfig(_Model):
    """The healer on the tooling VM: where the stack's state is, and its thresholds (safe defaults)."""

    backend_url: str | None = None
    """Backend holding the stack's state (``gs://bucket``); the healer is deployed only when it is set."""
    dry_run: bool = False
    """Log every decision, replace nothing."""
    startup_grace_seconds: int = Field(default=900, ge=0, le=86_400)
    """Machines younger than this are never replaced (they may still be booting)."""
    max_unhealthy: Limit = "34%"
    """Remediation stops while more machines than this are unhealthy (a count or a percentage of all machines)."""
    max_unhealthy_per_site: Limit = "50%"
    """The same per site (a percentage of the site's machines, at least 1 when above 0 %)."""
    cooldown_seconds: int = Field(default=600, ge=60, le=86_400)
    """Wait after a machine's repair before it may be repaired again; doubles with each recent repair."""
    max_backoff_seconds: int = Field(default=21_600, ge=60, le=604_800)
    """Upper bound of that wait."""
    flap_window_seconds: int = Field(default=3600, ge=60, le=604_800)
    flap_threshold: int = Field(default=3, ge=2, le=100)
    """A machine down this many times within ``flapWindowSeconds`` is left to a human."""
    repair_gateways: bool = False
    """Replace a strongSwan gateway VM when its site alone is partitioned (and a gateway VM that NodeDown reports)."""
    repair_timeout_seconds: int = Field(default=2700, ge=300, le=21_600)
    """An update that takes longer is interrupted (SIGINT, then SIGTERM) and counted as failed."""
    settle_seconds: int | None = Field(default=None, ge=0, le=3600)
    """A NodeDown waits this long before its machine is replaced, so a partition of its site reported a moment later
    cancels it. Unset: one scrape interval and two rule evaluations (45 s with the production timings)."""


MAX_EGRESS_GB_PER_MONTH = 1_000_000
"""1 PB a month per site: beyond any plausible figure, so a bigger one is a unit mistake."""


class CostConfig(_Model):
    """Assumptions of the monthly cost estimate (``resinfra plan``, ``resinfra cost``)."""

    egress_gb_per_month: float = Field(default=100, ge=0, le=MAX_EGRESS_GB_PER_MONTH)
    """GB each site sends out to the internet a month, tunnel traffic to other sites included."""


class StackConfig(_Model):
    """Everything under ``resinfra:`` in a ``Pulumi.<stack>.yaml``."""

    prefix: DnsLabel
    """Prefix of every resource and host name (e.g. ``ri-dev``)."""
    supernet: Cidr = "10.10.0.0/16"
    """Private range that holds every site's address block."""
    site_prefix_length: int = Field(default=20, ge=9, le=23)
    """Size of one site's address block inside the supernet."""
    admin_cidrs: list[Cidr] = Field(min_length=1)
    """Networks allowed to reach SSH on every machine."""
    allow_ssh_from_anywhere: bool = False
    """Must be true to accept adminCidrs that together cover more than ``adminCidrsMaxShare`` of the public IPv4
    space, or any public /8 or wider (0.0.0.0/0, but also 0.0.0.0/1 + 128.0.0.0/1)."""
    admin_cidrs_max_share: float = Field(default=1 / 1024, gt=0, le=1)
    """Largest share of the public IPv4 space adminCidrs may cover together without allowSshFromAnywhere
    (default 1/1024, about 4 million addresses: a /10)."""
    admin_user: DnsLabel = "resinfra"
    ssh_public_key: str = Field(min_length=1)
    """OpenSSH public key of the admin user; ``resinfra:sshPrivateKey`` (secret) is its private half."""
    push_via: Literal["public", "private"] = "public"
    """Address that configuration pushes (pulumi-command over SSH) connect to: ``public``
    from an operator or CI inside adminCidrs, ``private`` from inside the mesh (the healer)."""
    sites: list[SiteConfig] = Field(min_length=1)
    tooling: ToolingConfig = Field(default_factory=ToolingConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    """Assumptions of the cost estimate; nothing is declared from them."""
    healer: HealerConfig = Field(default_factory=HealerConfig)
    """The healer's backend and thresholds."""

    @property
    def supernet_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.supernet)

    @property
    def tooling_site(self) -> str:
        """Name of the site that hosts the tooling VM."""
        if self.tooling.site:
            return self.tooling.site
        hetzner = [s.name for s in self.sites if s.provider == Provider.HETZNER]
        return hetzner[0] if hetzner else self.sites[0].name


Site = GcpSite | AzureSite | HetznerSite | ProxmoxSite

# ---------------------------------------------------------------------------
# Turning pydantic errors into keyed problems


def key_path(loc: Iterable[str | int]) -> str:
    """Render a pydantic location as a config key: ``resinfra:sites[2].machineType``."""
    parts = list(loc)
    if not parts:
        return f"{NAMESPACE}:"
    out = f"{NAMESPACE}:{parts[0]}"
    for part in parts[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _known_fields(loc: list[str | int], raw: Mapping[str, Any]) -> list[str]:
    """The keys allowed at the object that holds ``loc``'s last element."""
    model: type[BaseModel] = StackConfig
    for part in loc[:-1]:
        if isinstance(part, str) and part in NESTED_MODELS:
            model = NESTED_MODELS[part]
    if loc[:1] == ["sites"] and len(loc) >= 3:
        sites = raw.get("sites")
        index = loc[1]
        site = sites[index] if isinstance(sites, list) and isinstance(index, int) and index < len(sites) else None
        provider = str(site.get("provider")) if isinstance(site, dict) else ""
        model = PROVIDER_MODELS.get(provider, SiteBase)
        if loc[2] == "images" and len(loc) >= 4:
            model = PROVIDER_IMAGE_MODELS.get(provider, SiteImagesBase)
    return [f.alias or name for name, f in model.model_fields.items()]


NESTED_MODELS: dict[str, type[BaseModel]] = {"tooling": ToolingConfig, "cost": CostConfig, "healer": HealerConfig}

PROVIDER_MODELS: dict[str, type[BaseModel]] = {
    Provider.GCP: GcpSite,
    Provider.AZURE: AzureSite,
    Provider.HETZNER: HetznerSite,
    Provider.PROXMOX: ProxmoxSite,
}

PROVIDER_IMAGE_MODELS: dict[str, type[BaseModel]] = {
    Provider.GCP: GcpImages,
    Provider.AZURE: AzureImages,
    Provider.HETZNER: HetznerImages,
    Provider.PROXMOX: ProxmoxImages,
}

RETIRED_SITE_KEYS = {"image": "images"}
"""Site keys that were replaced, by their successor: a stack that still has one gets a migration message."""


def _retired_site_key(loc: list[str | int], value: Any, raw: Mapping[str, Any]) -> Problem:
    """The migration message for a retired site key (``image``: one image for every machine of the site)."""
    key = key_path(loc)
    site = raw["sites"][loc[1]]
    provider = str(site.get("provider")) if isinstance(site, dict) else ""
    roles = ["worker", "gateway", "tooling"] if provider in (Provider.HETZNER, Provider.PROXMOX) else ["worker", "tooling"]
    overrides = ", ".join(f"{role}: {json.dumps(value)}" for role in roles)
    return Problem(
        key,
        f"replaced by {key_path([*loc[:-1], 'images'])} (an image per role, stock or Packer-built)",
        f"for the same machines write 'images: {{overrides: {{{overrides}}}}}' (stock mode: the full user-data), "
        "or build the images in images/ and write 'images: {mode: packer}'",
    )


def _gateways_problem(key: str, kind: str, value: Any) -> Problem:
    """``gateways`` on a site whose cloud runs the VPN gateway, or a count other than 1 or 2."""
    if kind == "extra_forbidden":
        return Problem(
            key,
            "this site has no gateway VM: its cloud runs the VPN gateway (Azure's redundancy is activeActive, GCP's HA VPN has two interfaces)",
            "remove it; gateways applies to hetzner and proxmox sites",
        )
    return Problem(key, f"{value!r} is not allowed: a site runs one strongSwan gateway VM or a pair", "use 1, or 2 for a pair that fails over in seconds")


def _problem_from_pydantic(err: Any, raw: Mapping[str, Any]) -> Problem:
    loc: list[str | int] = list(err["loc"])
    # Discriminated unions add the tag to the location (sites.0.gcp.zone): drop it.
    if len(loc) >= 3 and loc[0] == "sites" and loc[2] in PROVIDER_MODELS:
        loc = loc[:2] + loc[3:]
    kind = err["type"]
    # A dict key that is not allowed is reported at that key (sites.0.images.overrides.gateway.[key]).
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        if kind == "literal_error" and err.get("input") == "gateway":
            return Problem(
                key_path(loc), "sites of this provider have no gateway VM (the cloud runs the VPN gateway)", f"remove it; use {err['ctx']['expected']}"
            )
    key = key_path(loc)
    value = err.get("input")
    if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "sites" and loc[2] in RETIRED_SITE_KEYS:
        return _retired_site_key(loc, value, raw)
    if len(loc) == 3 and loc[0] == "sites" and loc[2] == "gateways":
        return _gateways_problem(key, kind, value)
    if kind == "extra_forbidden":
        known = _known_fields(loc, raw)
        if len(loc) == 1:
            # The secret keys are read apart from the model (never validated as plain values), yet they are keys here.
            known = [*known, *SECRET_KEYS, *OPTIONAL_SECRET_KEYS]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "remove it."
        return Problem(key, "unknown key", f"{hint} Known keys here: {', '.join(sorted(known))}")
    if kind == "union_tag_invalid":
        return Problem(
            key_path([*loc, "provider"]),
            f"unknown provider {value.get('provider')!r}" if isinstance(value, dict) else "unknown provider",
            f"use one of {', '.join(p.value for p in Provider)}",
        )
    if kind == "union_tag_not_found":
        return Problem(
            key_path([*loc, "provider"]),
            "missing",
            f"add 'provider:' with one of {', '.join(p.value for p in Provider)}",
        )
    if kind == "missing":
        return Problem(key, "missing", _MISSING_FIXES.get(key, f"set {key} (see docs/configuration.md)"))
    if kind == "list_type":
        return Problem(key, f"{value!r} is not a list", f"write {key} as a YAML list, one entry per line starting with '- '")
    if kind == "string_pattern_mismatch" and "overrides" in loc:
        return Problem(
            key,
            f"{value!r} has the wrong form",
            "give the image's resource id: /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Compute/images/<name> "
            "(or .../galleries/<gallery>/images/<definition>[/versions/<version>])",
        )
    if kind == "string_pattern_mismatch":
        return Problem(key, f"{value!r} has the wrong form", _PATTERN_FIXES.get(str(loc[-1]), f"it must match {err['ctx']['pattern']}"))
    if kind in ("greater_than_equal", "less_than_equal", "too_short", "too_long", "string_too_long", "string_too_short"):
        return Problem(key, f"{value!r} is out of bounds ({err['msg'].lower()})", _bounds_fix(loc))
    if kind in ("float_parsing", "int_parsing", "float_type", "int_type"):
        return Problem(key, f"{value!r} is not a number", _bounds_fix(loc))
    if kind == "value_error":
        cause = str(err["ctx"].get("error", err["msg"]))
        fix = _VALUE_FIXES.get(str(loc[-1]), "write an IPv4 address or network such as 10.10.0.0/16 (no host bits set in a network)")
        return Problem(key, f"{value!r} is not valid ({cause})", fix)
    if kind == "enum":
        return Problem(key, f"{value!r} is not allowed", f"use {err['ctx']['expected']}")
    if kind == "literal_error":
        return Problem(key, f"{value!r} is not allowed", f"use {err['ctx']['expected']}")
    return Problem(key, err["msg"].lower(), "see docs/configuration.md")


_MISSING_FIXES = {
    key_path(["sshPublicKey"]): 'run: pulumi config set resinfra:sshPublicKey "$(cat ~/.ssh/id_ed25519.pub)"',
    key_path(["adminCidrs"]): "run: pulumi config set --path 'resinfra:adminCidrs[0]' <your office or VPN range>",
    key_path(["prefix"]): "run: pulumi config set resinfra:prefix <short name, e.g. ri-dev>",
}

_VALUE_FIXES = {"nodeAddress": "give the host name or IPv4 address the Proxmox VE node answers SSH on"}

_PATTERN_FIXES = {
    "name": "use lowercase letters, digits and '-', starting with a letter and not ending with '-' (at most 30 characters)",
    "prefix": "use lowercase letters, digits and '-', starting with a letter and not ending with '-' (at most 30 characters)",
    "adminUser": "use lowercase letters, digits and '-', starting with a letter",
    "node": "use the Proxmox VE node's name as shown in the cluster view",
    "project": "use the GCP project id (6-30 lowercase letters, digits and '-'), not its display name or number",
    "region": "use a GCP region such as europe-west3",
    "zone": "use a GCP zone such as europe-west3-a",
    "location": "use an Azure region name such as westeurope (lowercase, no spaces)",
    "resourceGroup": "use at most 90 letters, digits, '-', '_', '.', '(' or ')', not ending with '.'",
    "maxUnhealthy": "give a count of machines (2) or a percentage from 0% to 100% (34%)",
    "maxUnhealthyPerSite": "give a count of machines (1) or a percentage from 0% to 100% (50%)",
}


_HEALER_BOUNDS_FIXES = {
    "startupGraceSeconds": "give 0 to 86400 seconds (the default 900 covers a slow first boot)",
    "cooldownSeconds": "give 60 to 86400 seconds between two repairs of one machine",
    "maxBackoffSeconds": "give 60 to 604800 seconds, at least cooldownSeconds",
    "flapWindowSeconds": "give 60 to 604800 seconds",
    "flapThreshold": "give 2 to 100 down episodes",
    "repairTimeoutSeconds": "give 300 to 21600 seconds (an Azure VM replacement takes several minutes)",
}


def _bounds_fix(loc: list[str | int]) -> str:
    field = str(loc[-1])
    if field == "workers":
        return f"use between {MIN_WORKERS} and {MAX_WORKERS} workers per site"
    if field == "number":
        return "use a site number of 1 or more"
    if field == "sitePrefixLength":
        return "use a prefix length between 9 and 23 (a /20 gives 4094 addresses per site)"
    if field == "egressGbPerMonth":
        return f"give the GB each site sends to the internet a month, from 0 to {MAX_EGRESS_GB_PER_MONTH}"
    if field in ("adminCidrs", "sites"):
        return f"list at least one entry under {key_path(loc)}"
    if loc[:1] == ["healer"]:
        return _HEALER_BOUNDS_FIXES.get(field, "see the healer keys in docs/configuration.md")
    return "see docs/configuration.md"


# ---------------------------------------------------------------------------
# Rules across keys


def check_stack(cfg: StackConfig) -> list[Problem]:
    """Rules that span several keys; empty when the stack is valid.

    + cfg: a structurally valid stack config

    Example: two sites with number 1 give a problem keyed ``resinfra:sites[1].number``.
    """
    from resinfra import addressing, cloud_rules, naming  # local: they import this module's types

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
    from resinfra import addressing, naming  # local: both import this module's types

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


# ---------------------------------------------------------------------------
# Loading


def parse_config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``resinfra:*`` config entries (as Pulumi stores them) into a plain dict.

    + values: config keys with their namespace (``resinfra:sites``) to values; values are
      either already structured (YAML) or the JSON strings Pulumi hands a program.

    Keys of other namespaces are ignored.
    """
    out: dict[str, Any] = {}
    prefix = NAMESPACE + ":"
    for key, value in values.items():
        if not key.startswith(prefix) or key[len(prefix) :] in SECRET_KEYS | OPTIONAL_SECRET_KEYS:
            continue
        if isinstance(value, str) and value[:1] in "[{":
            # Left as text when it is not JSON: the model then reports the wrong type against the key.
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        out[key[len(prefix) :]] = value
    return out


_STACK_ADAPTER = TypeAdapter(StackConfig)


def _is_http_url(value: str) -> bool:
    """Whether ``value`` looks like an http(s) URL with a host."""
    return re.match(r"^https?://[^/\s]+(/\S*)?$", value.strip()) is not None


def _json_secret(values: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(present, decoded value) of a secret config key whose value is structured (JSON text or already decoded)."""
    value = values.get(f"{NAMESPACE}:{key}")
    if not value:
        return False, None
    if isinstance(value, str):
        try:
            return True, json.loads(value)
        except json.JSONDecodeError:
            return True, None
    return True, value


def plaintext_secret_warnings(config_map: Mapping[str, Any]) -> list[str]:
    """Warnings for secrets written in clear in a stack file's ``config:`` map (``secure:`` values are fine).

    The program reads them all the same, so this is a warning, not an error: the value is in the
    repository and in every copy of the file. Example: ``resinfra:sshPrivateKey: "-----BEGIN..."``
    gives one warning naming the key and ``pulumi config set --secret``.
    """
    secret = {f"{NAMESPACE}:{k}" for k in SECRET_KEYS | OPTIONAL_SECRET_KEYS} | PROVIDER_SECRET_KEYS
    warnings = []
    for key in sorted(k for k in config_map if k in secret):
        value = config_map[key]
        if value in (None, "") or (isinstance(value, Mapping) and set(value) == {"secure"}):
            continue
        warnings.append(
            f"{key}: a secret is written in clear in the stack file (the value is not shown). "
            f"Fix: remove it from the file and run: pulumi config set --secret {key} <value> (or < file)"
        )
    return warnings


def _healer_secret_problems(values: Mapping[str, Any]) -> list[Problem]:
    """The healer's credentials: checked for shape only, never echoed."""
    problems = []
    present, env = _json_secret(values, "healerEnvironment")
    if present:
        key = key_path(["healerEnvironment"])
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            problems.append(
                Problem(
                    key,
                    "is not a map of variable names to text (the value is a secret and is not shown)",
                    f"run: pulumi config set --secret --path '{key}.HCLOUD_TOKEN' <token>",
                )
            )
        else:
            unknown = sorted(str(k) for k in env if k not in HEALER_ENVIRONMENT_NAMES)
            if unknown:
                problems.append(
                    Problem(key, f"sets {', '.join(unknown)}, which the healer does not pass on", f"use only {', '.join(sorted(HEALER_ENVIRONMENT_NAMES))}")
                )
    present, credentials = _json_secret(values, "healerGoogleCredentials")
    if present and not (isinstance(credentials, dict) and credentials.get("type") == "service_account"):
        key = key_path(["healerGoogleCredentials"])
        problems.append(
            Problem(
                key, "is not a service-account key JSON (the value is a secret and is not shown)", f"run: pulumi config set --secret {key} < healer-key.json"
            )
        )
    return problems


def conditional_secret_keys(values: Mapping[str, Any]) -> set[str]:
    """Optional secret keys that this config requires: :data:`FAILOVER_TOKEN_KEY` when a Hetzner site has ``gateways: 2``.

    Read from the raw values (before validation), so an offline run can give it a placeholder as it does the required secrets.
    """
    sites = parse_config_values(values).get("sites")
    pairs = [s for s in sites if isinstance(s, dict) and s.get("provider") == Provider.HETZNER and s.get("gateways") == 2] if isinstance(sites, list) else []
    return {FAILOVER_TOKEN_KEY} if pairs else set()


def load(values: Mapping[str, Any], *, deployment: bool = False) -> StackConfig:
    """Validate ``resinfra:*`` config and return it, or raise :class:`ConfigError`.

    + values: namespaced config entries (see :func:`parse_config_values`)
    + deployment: also refuse what only a real deployment refuses, the placeholders of the
      example stacks (:func:`resinfra.cloud_rules.deployment_problems`); offline runs
      (``resinfra plan``, ``render``, the lab) leave it off and print them instead

    Example::

        load({"resinfra:prefix": "ri-dev", ...})  # -> StackConfig
    """
    raw = parse_config_values(values)
    secret_problems = [
        Problem(
            key_path([key]),
            "missing",
            f"create a key pair for the stack (ssh-keygen -t ed25519 -f stack-key), set resinfra:sshPublicKey to stack-key.pub and run: pulumi config set --secret {key_path([key])} < stack-key",
        )
        for key in sorted(SECRET_KEYS)
        if not values.get(f"{NAMESPACE}:{key}")
    ]
    secret_problems += [
        Problem(
            key_path([key]),
            "is not an http(s) URL (the value is a secret and is not shown)",
            f"run: pulumi config set --secret {key_path([key])} https://...",
        )
        for key in sorted(URL_SECRET_KEYS)
        if values.get(f"{NAMESPACE}:{key}") and not _is_http_url(str(values[f"{NAMESPACE}:{key}"]))
    ]
    secret_problems += _healer_secret_problems(values)
    secret_problems += [
        Problem(
            key_path([key]),
            "missing: a Hetzner site with gateways: 2 moves its Floating IP and network routes through the Hetzner Cloud API "
            "with this token (the value is a secret)",
            "create an API token with Read & Write permission in the Hetzner project of that site (Hetzner Console: Security > API Tokens) "
            f"and run: pulumi config set --secret {key_path([key])} <token>",
        )
        for key in sorted(conditional_secret_keys(values))
        if not values.get(f"{NAMESPACE}:{key}")
    ]
    try:
        cfg = _STACK_ADAPTER.validate_python(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError([*secret_problems, *(_problem_from_pydantic(e, raw) for e in exc.errors())]) from None
    problems = secret_problems + check_stack(cfg)
    if deployment:
        from resinfra import cloud_rules  # local: it imports this module's types

        problems += cloud_rules.deployment_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
