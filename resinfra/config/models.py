"""The pydantic models of the stack config (``StackConfig`` and the sites, images, tooling, healer and cost sections).

Structural rules (types, unknown keys, bounds) live here, on the models; rules that span several keys are in
:mod:`resinfra.config.rules`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

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
