"""Monthly cost estimate of a stack, from its config and the price table ``prices.yaml`` (pure).

The estimate is built from what the config says (machines and their sizes, the gateway
kind, tunnels per pair of sites, public addresses, an egress assumption), never from the
list of declared resources, so it does not change when the mesh or the tooling add
resources that cost nothing by themselves (routers, peers, firewall rules, commands).

Counted per site: VMs (workers, the strongSwan gateway VM, the tooling VM), their boot
disks where billed apart (GCP, Azure), the managed VPN gateway (Azure), tunnel-hours
(GCP per tunnel, Azure beyond the included tunnels), public IPv4 addresses, and internet
egress of ``resinfra:cost.egressGbPerMonth`` GB. Not counted: taxes, discounts, snapshots,
logging and monitoring services, inter-zone traffic, Proxmox hardware, power and uplink.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from resinfra.addressing import GATEWAY_VM_PROVIDERS, Role, plan_site
from resinfra.config import AzureSite, GcpSite, HetznerSite, Provider, ProxmoxSite, Site, StackConfig
from resinfra.mesh.plan import gateway_kind, link_kind, tunnel_count

PRICE_TABLE = Path(__file__).with_name("prices.yaml")
GCP_BOOT_DISK_GB = 20
"""Boot disk of every GCP machine (``resinfra.sites.gcp.BOOT_DISK_GB``; a test keeps them equal)."""
GCP_BOOT_DISK_TYPE = "pd-balanced"
AZURE_OS_DISK = "StandardSSD_LRS-E4"
"""The stock Ubuntu image's 30 GiB OS disk on Standard SSD bills as an E4 (32 GiB)."""

ESTIMATE_NOTICE = (
    "Estimate only: on-demand list prices from resinfra/prices.yaml (each entry names its source and date), "
    "no discounts or tax; egress is an assumption (resinfra:cost.egressGbPerMonth)."
)


class Category(enum.StrEnum):
    """What a line of the estimate is for."""

    MACHINES = "machines"
    DISKS = "disks"
    VPN_GATEWAY = "vpn-gateway"
    TUNNELS = "tunnels"
    PUBLIC_ADDRESSES = "public-addresses"
    EGRESS = "egress"


class PriceNotFound(LookupError):
    """The price table has no entry for (provider, item, key, region)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceEntry(_Strict):
    """One price of the table."""

    provider: Provider
    item: str
    key: str
    region: str
    """A provider region or location, or ``*`` for every region."""
    price: float = Field(ge=0)
    unit: Literal["hour", "month", "GB-month", "GB", "tunnels"]
    currency: str
    date: str
    checked: str | None
    """The day the figure was confirmed from a readable copy of ``source``, or None."""
    source: str = Field(pattern=r"^https://")
    note: str = ""


class ExchangeRate(_Strict):
    rate: float = Field(gt=0)
    """USD per unit."""
    date: str
    checked: str | None
    source: str = Field(pattern=r"^https://")
    note: str = ""


class PriceTable(_Strict):
    """The whole table: entries, hours per month, exchange rates into the table's currency."""

    hours_per_month: float = Field(alias="hoursPerMonth", gt=0)
    currency: str
    exchange_rates: dict[str, ExchangeRate] = Field(alias="exchangeRates")
    entries: list[PriceEntry]

    def lookup(self, provider: Provider, item: str, key: str, region: str) -> PriceEntry:
        """The entry for ``region``, else the provider-wide ``*`` entry.

        Example: ``table.lookup(Provider.GCP, "machine", "e2-small", "europe-west3").price``
        """
        exact = [e for e in self.entries if (e.provider, e.item, e.key, e.region) == (provider, item, key, region)]
        wildcard = [e for e in self.entries if (e.provider, e.item, e.key, e.region) == (provider, item, key, "*")]
        found = exact or wildcard
        if not found:
            raise PriceNotFound(f"no price for {provider.value} {item} {key!r} in {region} in {PRICE_TABLE.name}")
        return found[0]

    def monthly(self, entry: PriceEntry, quantity: float = 1) -> float:
        """Monthly amount of ``quantity`` units of ``entry`` in the table's currency."""
        per_month = entry.price * self.hours_per_month if entry.unit == "hour" else entry.price
        return per_month * quantity * self.to_table_currency(entry.currency)

    def to_table_currency(self, currency: str) -> float:
        if currency == self.currency:
            return 1.0
        if currency not in self.exchange_rates:
            raise PriceNotFound(f"no exchange rate {currency}->{self.currency} in {PRICE_TABLE.name}")
        return self.exchange_rates[currency].rate


def parse_price_table(document: dict[str, Any]) -> PriceTable:
    """Validate a price table document (the parsed ``prices.yaml``)."""
    return PriceTable.model_validate(document)


@cache
def price_table() -> PriceTable:
    """The repository's price table (read once)."""
    return parse_price_table(yaml.safe_load(PRICE_TABLE.read_text()))


@dataclass(frozen=True)
class CostLine:
    """One priced (or unpriced) item of a site."""

    category: Category
    description: str
    quantity: float
    monthly: float
    """In the table's currency; 0 when unpriced."""
    entry: PriceEntry | None = None
    unpriced: str | None = None
    """Why there is no price (a missing table entry)."""


@dataclass
class SiteCost:
    site: str
    provider: Provider
    region: str
    lines: list[CostLine] = field(default_factory=list)

    @property
    def monthly(self) -> float:
        return sum(line.monthly for line in self.lines)

    def by_category(self) -> dict[Category, float]:
        out = dict.fromkeys(Category, 0.0)
        for line in self.lines:
            out[line.category] += line.monthly
        return out


@dataclass
class StackCost:
    currency: str
    hours_per_month: float
    egress_gb_per_month: float
    sites: list[SiteCost]

    @property
    def monthly(self) -> float:
        return sum(s.monthly for s in self.sites)

    @property
    def unpriced(self) -> list[str]:
        return [f"{s.site}: {line.unpriced}" for s in self.sites for line in s.lines if line.unpriced]


# ---------------------------------------------------------------------------
# What the config implies (no prices yet)


def region_of(site: Site) -> str:
    """The region key prices are looked up with."""
    if isinstance(site, GcpSite):
        return site.region
    if isinstance(site, AzureSite | HetznerSite):
        return site.location
    return site.node


def gateway_interfaces(site: Site) -> int:
    """Public tunnel endpoints of a site's gateway: GCP HA VPN has two interfaces, an
    active-active Azure gateway two instances, a strongSwan VM one address."""
    if isinstance(site, GcpSite):
        return 2
    if isinstance(site, AzureSite):
        return 2 if site.active_active else 1
    return 1


def tunnels_per_pair(a: Site, b: Site) -> int:
    """Tunnels between two sites: exactly what the mesh builds (``mesh.plan.tunnel_count``)."""
    kind = link_kind(gateway_kind(Provider(a.provider)), gateway_kind(Provider(b.provider)))
    return tunnel_count(kind, a, b)


def classic_vpn_gateways(cfg: StackConfig, site: Site) -> int:
    """1 when a GCP site also runs a Classic VPN gateway (for its statically routed links
    to strongSwan sites): that gateway holds a reserved external address."""
    if not isinstance(site, GcpSite):
        return 0
    return int(any(Provider(other.provider) in GATEWAY_VM_PROVIDERS for other in cfg.sites))


def site_tunnels(cfg: StackConfig, site: Site) -> int:
    """Tunnels that end on ``site`` (full mesh: one bundle per other site)."""
    return sum(tunnels_per_pair(site, other) for other in cfg.sites if other.name != site.name)


def machine_sizes(cfg: StackConfig, site: Site) -> list[tuple[Role, str]]:
    """(role, size key) of every machine on the site, from the address plan."""
    out = []
    for machine in plan_site(cfg, site).machines:
        out.append((machine.role, _size(cfg, site, machine.role)))
    return out


def _size(cfg: StackConfig, site: Site, role: Role) -> str:
    if isinstance(site, ProxmoxSite):
        return "vm"
    worker = site.machine_type if isinstance(site, GcpSite) else site.vm_size if isinstance(site, AzureSite) else site.server_type
    if role is Role.TOOLING and cfg.tooling.size:
        return cfg.tooling.size
    if role is Role.GATEWAY and isinstance(site, HetznerSite) and site.gateway_server_type:
        return site.gateway_server_type
    return worker


def public_addresses(cfg: StackConfig, site: Site) -> int:
    """Billed public IPv4 addresses: one per machine (GCP, Azure, Hetzner), plus the Azure
    gateway's; GCP HA VPN interface addresses are part of the gateway and not billed apart."""
    machines = len(plan_site(cfg, site).machines)
    if isinstance(site, AzureSite):
        return machines + gateway_interfaces(site)
    return machines + classic_vpn_gateways(cfg, site)


# ---------------------------------------------------------------------------
# Pricing


def estimate(cfg: StackConfig, table: PriceTable | None = None) -> StackCost:
    """The monthly estimate of every site.

    + cfg: a validated stack config
    + table: the price table (default: ``resinfra/prices.yaml``)

    Items without a price become lines with ``unpriced`` set (and 0), never an error, so a
    new size shows up as "unpriced" instead of breaking ``resinfra plan``.
    """
    table = table or price_table()
    return StackCost(
        currency=table.currency,
        hours_per_month=table.hours_per_month,
        egress_gb_per_month=cfg.cost.egress_gb_per_month,
        sites=[site_cost(cfg, site, table) for site in cfg.sites],
    )


def gateway_pairs_cost(cfg: StackConfig, table: PriceTable | None = None) -> dict[str, float]:
    """Per site with ``gateways: 2``: what its pair adds a month over one gateway (the second VM, its address, the
    egress it does not add, a Hetzner pair's Floating IP), the same estimate with ``gateways: 1`` subtracted."""
    table = table or price_table()
    out = {}
    for site in cfg.sites:
        if getattr(site, "gateways", 1) == 2:
            single = site.model_copy(update={"gateways": 1})
            out[site.name] = site_cost(cfg, site, table).monthly - site_cost(cfg, single, table).monthly
    return out


def site_cost(cfg: StackConfig, site: Site, table: PriceTable) -> SiteCost:
    """Every line of one site."""
    provider = Provider(site.provider)
    region = region_of(site)
    cost = SiteCost(site=site.name, provider=provider, region=region)

    def add(category: Category, description: str, item: str, key: str, quantity: float) -> None:
        if quantity <= 0:
            return
        try:
            entry = table.lookup(provider, item, key, region)
        except PriceNotFound as missing:
            cost.lines.append(CostLine(category, description, quantity, 0.0, unpriced=str(missing)))
            return
        cost.lines.append(CostLine(category, description, quantity, table.monthly(entry, quantity), entry))

    sizes: dict[str, list[Role]] = {}
    for role, size in machine_sizes(cfg, site):
        sizes.setdefault(size, []).append(role)
    for size, roles in sizes.items():
        add(Category.MACHINES, f"{_roles_text(roles)} ({size})", "machine", size, len(roles))
    machines = sum(len(r) for r in sizes.values())
    if isinstance(site, GcpSite):
        add(Category.DISKS, f"{GCP_BOOT_DISK_GB} GB {GCP_BOOT_DISK_TYPE} boot disks", "disk", GCP_BOOT_DISK_TYPE, machines * GCP_BOOT_DISK_GB)
    if isinstance(site, AzureSite):
        add(Category.DISKS, "OS disks (Standard SSD E4)", "disk", AZURE_OS_DISK, machines)
        add(Category.VPN_GATEWAY, f"VNet gateway {site.gateway_sku}", "vpn-gateway", site.gateway_sku, 1)

    tunnels = site_tunnels(cfg, site)
    if isinstance(site, GcpSite):
        # HA VPN (to Azure) and Classic VPN (to strongSwan) tunnels are billed alike per tunnel-hour.
        add(Category.TUNNELS, "VPN tunnels (HA and Classic VPN)", "vpn-tunnel", "ha-vpn", tunnels)
    if isinstance(site, AzureSite):
        included = _allowance(table, provider, "vpn-tunnel-included", "s2s", region)
        add(Category.TUNNELS, f"S2S tunnels beyond {included:g} included ({tunnels} in all)", "vpn-tunnel", "s2s", max(0, tunnels - included))

    address_item = {
        Provider.GCP: "in-use",
        Provider.AZURE: "standard-static",
        Provider.HETZNER: "primary",
        Provider.PROXMOX: "own-range",
    }[provider]
    add(Category.PUBLIC_ADDRESSES, "public IPv4 addresses", "public-ipv4", address_item, public_addresses(cfg, site))
    if isinstance(site, HetznerSite) and site.gateways == 2:
        add(Category.PUBLIC_ADDRESSES, "Floating IPv4 of the gateway pair", "public-ipv4", "floating", 1)

    egress = cfg.cost.egress_gb_per_month
    free = 0.0
    if isinstance(site, AzureSite):
        free = _allowance(table, provider, "egress-included", "internet", region)
    if isinstance(site, HetznerSite):
        free = _allowance(table, provider, "egress-included", "per-server", region) * machines
    billed = max(0.0, egress - free)
    description = f"internet egress {egress:g} GB/month" + (f" ({free:g} GB included)" if free else "")
    try:
        entry = table.lookup(provider, "egress", "internet", region)
        cost.lines.append(CostLine(Category.EGRESS, description, billed, table.monthly(entry, billed), entry))
    except PriceNotFound as missing:
        cost.lines.append(CostLine(Category.EGRESS, description, billed, 0.0, unpriced=str(missing)))
    return cost


def _allowance(table: PriceTable, provider: Provider, item: str, key: str, region: str) -> float:
    try:
        return table.lookup(provider, item, key, region).price
    except PriceNotFound:
        return 0.0


def _roles_text(roles: Iterable[Role]) -> str:
    counts: dict[str, int] = {}
    for role in roles:
        label = {Role.WORKER: "worker", Role.GATEWAY: "gateway VM", Role.TOOLING: "tooling VM"}[role]
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {label}{'s' if n > 1 else ''}" for label, n in counts.items())


# ---------------------------------------------------------------------------
# Reports


def cost_report(cost: StackCost) -> dict[str, Any]:
    """The estimate as data (``resinfra plan --json``'s ``cost``)."""
    return {
        "estimate": True,
        "notice": ESTIMATE_NOTICE,
        "currency": cost.currency,
        "hoursPerMonth": cost.hours_per_month,
        "egressGbPerMonth": cost.egress_gb_per_month,
        "monthlyTotal": round(cost.monthly, 2),
        "unpriced": cost.unpriced,
        "sites": [
            {
                "site": s.site,
                "provider": s.provider.value,
                "region": s.region,
                "monthly": round(s.monthly, 2),
                "lines": [
                    {
                        "category": line.category.value,
                        "description": line.description,
                        "quantity": line.quantity,
                        "monthly": round(line.monthly, 2),
                        "unitPrice": line.entry.price if line.entry else None,
                        "unit": line.entry.unit if line.entry else None,
                        "priceCurrency": line.entry.currency if line.entry else None,
                        "source": line.entry.source if line.entry else None,
                        "priceChecked": line.entry.checked if line.entry else None,
                        "unpriced": line.unpriced,
                    }
                    for line in s.lines
                ],
            }
            for s in cost.sites
        ],
    }


@dataclass(frozen=True)
class SiteDelta:
    site: str
    base: float | None
    """None when the site is new in head."""
    head: float | None
    """None when the site is removed in head."""

    @property
    def delta(self) -> float:
        return (self.head or 0.0) - (self.base or 0.0)


def diff(base: StackCost, head: StackCost) -> list[SiteDelta]:
    """Per-site monthly difference, in head's site order, removed sites last."""
    base_sites = {s.site: s.monthly for s in base.sites}
    head_sites = {s.site: s.monthly for s in head.sites}
    out = [SiteDelta(name, base_sites.get(name), amount) for name, amount in head_sites.items()]
    out += [SiteDelta(name, amount, None) for name, amount in base_sites.items() if name not in head_sites]
    return out


def diff_report(base: StackCost, head: StackCost, base_label: str, head_label: str) -> dict[str, Any]:
    """``resinfra cost --json``."""
    return {
        "estimate": True,
        "notice": ESTIMATE_NOTICE,
        "currency": head.currency,
        "base": {"label": base_label, "monthlyTotal": round(base.monthly, 2)},
        "head": {"label": head_label, "monthlyTotal": round(head.monthly, 2)},
        "monthlyDelta": round(head.monthly - base.monthly, 2),
        "sites": [
            {
                "site": d.site,
                "base": None if d.base is None else round(d.base, 2),
                "head": None if d.head is None else round(d.head, 2),
                "delta": round(d.delta, 2),
            }
            for d in diff(base, head)
        ],
        "unpriced": sorted(set(head.unpriced) | set(base.unpriced)),
    }


def format_diff(report: dict[str, Any], markdown: bool = False) -> str:
    """Text or Markdown (for the pull-request comment) of a :func:`diff_report`."""
    cur = report["currency"]

    def money(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}"

    def signed(value: float) -> str:
        return f"{value:+,.2f}"

    rows = [(s["site"], money(s["base"]), money(s["head"]), signed(s["delta"])) for s in report["sites"]]
    total = ("total", money(report["base"]["monthlyTotal"]), money(report["head"]["monthlyTotal"]), signed(report["monthlyDelta"]))
    if markdown:
        out = [
            f"Estimated monthly cost ({cur}): {report['base']['label']} → {report['head']['label']}: **{signed(report['monthlyDelta'])} {cur}/month**",
            "",
            "| site | base | head | change |",
            "|---|---:|---:|---:|",
        ]
        out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        out += [f"| **{total[0]}** | **{total[1]}** | **{total[2]}** | **{total[3]}** |", ""]
        out += [f"- not priced: {u}" for u in report["unpriced"]]
        out += [f"_{report['notice']}_"]
        return "\n".join(out)
    width = max(len(r[0]) for r in [*rows, total])
    out = [f"Estimated monthly cost ({cur}): {report['base']['label']} -> {report['head']['label']}"]
    out += [f"  {'site'.ljust(width)}  {'base':>12}  {'head':>12}  {'change':>12}"]
    out += [f"  {a.ljust(width)}  {b:>12}  {c:>12}  {d:>12}" for a, b, c, d in [*rows, total]]
    out += [f"  not priced: {u}" for u in report["unpriced"]]
    out += [f"  {report['notice']}"]
    return "\n".join(out)
