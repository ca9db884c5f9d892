"""The monthly cost estimate: price table lookups, the dev stack's golden estimate, and ``resinfra cost``."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from resinfra import cli, config, cost
from resinfra.config import Provider
from resinfra.offline import run_offline
from tests.conftest import DevStackCommands, dev_config, paired_config

GOLDEN = Path(__file__).with_name("golden") / "dev-cost.json"
REGENERATE = "RESINFRA_REGENERATE_GOLDEN"
"""Set to 1 to rewrite the golden file after a deliberate price or estimator change."""


def table_with(*entries: dict[str, Any], rates: dict[str, Any] | None = None) -> cost.PriceTable:
    base = {"date": "2026-11-26", "checked": None, "source": "https://example.org/prices", "currency": "USD"}
    return cost.parse_price_table(
        {
            "hoursPerMonth": 730,
            "currency": "USD",
            "exchangeRates": rates or {"EUR": {"rate": 1.5, "date": "2026-11-26", "checked": None, "source": "https://example.org/fx"}},
            "entries": [{**base, **e} for e in entries],
        }
    )


# ---------------------------------------------------------------------------
# The table


def test_every_entry_names_its_source_date_and_whether_it_was_confirmed() -> None:
    table = cost.price_table()
    assert table.entries
    for entry in table.entries:
        assert entry.source.startswith("https://")
        assert entry.date
        if entry.checked is None:
            # An unconfirmed figure must say where it comes from.
            assert len(entry.note) > 20, f"{entry.provider} {entry.item} {entry.key}: unconfirmed without a note"


def test_the_table_has_no_duplicate_keys() -> None:
    keys = [(e.provider, e.item, e.key, e.region) for e in cost.price_table().entries]
    assert len(keys) == len(set(keys))


def test_every_size_and_sku_the_example_stacks_use_is_priced() -> None:
    root = cli.project_dir()
    for path in sorted(root.glob("Pulumi.*.yaml")):
        _, cfg = cli.stack_config_from(str(path))
        estimate = cost.estimate(cfg)
        assert estimate.unpriced == [], f"{path.name}: {estimate.unpriced}"


def test_lookup_prefers_the_region_then_the_wildcard() -> None:
    table = table_with(
        {"provider": "gcp", "item": "machine", "key": "e2-small", "region": "*", "price": 1.0, "unit": "hour"},
        {"provider": "gcp", "item": "machine", "key": "e2-small", "region": "europe-west3", "price": 2.0, "unit": "hour"},
    )
    assert table.lookup(Provider.GCP, "machine", "e2-small", "europe-west3").price == 2.0
    assert table.lookup(Provider.GCP, "machine", "e2-small", "us-east1").price == 1.0
    with pytest.raises(cost.PriceNotFound, match="e2-medium"):
        table.lookup(Provider.GCP, "machine", "e2-medium", "europe-west3")
    with pytest.raises(cost.PriceNotFound):
        table.lookup(Provider.AZURE, "machine", "e2-small", "europe-west3")


def test_monthly_amounts_convert_hours_and_currencies() -> None:
    table = table_with(
        {"provider": "gcp", "item": "machine", "key": "a", "region": "*", "price": 0.01, "unit": "hour"},
        {"provider": "hetzner", "item": "machine", "key": "b", "region": "*", "price": 4.0, "unit": "month", "currency": "EUR"},
        {"provider": "gcp", "item": "egress", "key": "internet", "region": "*", "price": 0.12, "unit": "GB"},
    )
    assert table.monthly(table.lookup(Provider.GCP, "machine", "a", "x"), 3) == pytest.approx(0.01 * 730 * 3)
    assert table.monthly(table.lookup(Provider.HETZNER, "machine", "b", "x"), 2) == pytest.approx(4.0 * 2 * 1.5)
    assert table.monthly(table.lookup(Provider.GCP, "egress", "internet", "x"), 50) == pytest.approx(6.0)


def test_a_currency_without_a_rate_is_refused() -> None:
    table = table_with({"provider": "hetzner", "item": "machine", "key": "b", "region": "*", "price": 4.0, "unit": "month", "currency": "CHF"})
    with pytest.raises(cost.PriceNotFound, match="CHF"):
        table.monthly(table.lookup(Provider.HETZNER, "machine", "b", "x"))


def test_an_entry_without_a_source_is_refused() -> None:
    with pytest.raises(ValueError, match="source"):
        table_with({"provider": "gcp", "item": "machine", "key": "a", "region": "*", "price": 1, "unit": "hour", "source": "somewhere"})


# ---------------------------------------------------------------------------
# What the config implies


def test_tunnels_per_pair_are_the_meshs() -> None:
    cfg = config.load(dev_config())
    gcp, azure, hetzner, proxmox = cfg.sites
    assert cost.tunnels_per_pair(gcp, hetzner) == 1
    assert cost.tunnels_per_pair(azure, hetzner) == 1
    assert cost.tunnels_per_pair(hetzner, proxmox) == 1
    assert cost.tunnels_per_pair(gcp, azure) == 1
    active = azure.model_copy(update={"active_active": True})
    assert cost.tunnels_per_pair(gcp, active) == 2, "active-active Azure: two HA VPN tunnels"
    assert cost.tunnels_per_pair(active, proxmox) == 2, "active-active Azure: a tunnel from each instance to a strongSwan peer"
    assert cost.site_tunnels(cfg, gcp) == 3
    assert cost.site_tunnels(cfg, azure) == 3


def test_the_estimate_counts_the_tunnels_the_mesh_declares(offline_runs: dict[str, Any]) -> None:
    """Cost and mesh agree: the estimate's tunnels are the declared ones."""
    run = offline_runs["all-four"]
    cfg = run.config
    declared = sum(t["tunnels"] for t in run.outputs["tunnels"])
    assert sum(cost.site_tunnels(cfg, s) for s in cfg.sites) == 2 * declared


def test_the_gcp_boot_disk_size_matches_the_component() -> None:
    from resinfra.sites import gcp

    assert cost.GCP_BOOT_DISK_GB == gcp.BOOT_DISK_GB


def test_an_unknown_size_is_reported_not_fatal() -> None:
    values = copy.deepcopy(dev_config())
    values["resinfra:sites"][0]["machineType"] = "c3-highmem-176"
    estimate = cost.estimate(config.load(values))
    assert any("c3-highmem-176" in u for u in estimate.unpriced)
    gcp = estimate.sites[0]
    assert sum(line.monthly for line in gcp.lines if line.unpriced) == 0


def test_egress_assumption_drives_the_egress_line() -> None:
    values = copy.deepcopy(dev_config())
    values["resinfra:cost"] = {"egressGbPerMonth": 1000}
    estimate = cost.estimate(config.load(values))
    table = cost.price_table()
    gcp_egress = next(line for line in estimate.sites[0].lines if line.category is cost.Category.EGRESS)
    assert gcp_egress.monthly == pytest.approx(1000 * table.lookup(Provider.GCP, "egress", "internet", "europe-west3").price)
    azure_egress = next(line for line in estimate.sites[1].lines if line.category is cost.Category.EGRESS)
    assert azure_egress.quantity == 900  # 100 GB a month are free on Azure


# ---------------------------------------------------------------------------
# The dev stack


def test_dev_stack_estimate_matches_the_golden_file() -> None:
    report = cost.cost_report(cost.estimate(config.load(dev_config())))
    if os.environ.get(REGENERATE) == "1":
        GOLDEN.write_text(json.dumps(report, indent=2) + "\n")
    assert report == json.loads(GOLDEN.read_text()), f"the dev estimate changed; if deliberate, rerun with {REGENERATE}=1 and review the diff"


def test_dev_stack_total_is_the_sum_of_its_lines() -> None:
    report = cost.cost_report(cost.estimate(config.load(dev_config())))
    lines = [line["monthly"] for site in report["sites"] for line in site["lines"]]
    assert report["monthlyTotal"] == pytest.approx(sum(lines), abs=0.05)
    assert report["monthlyTotal"] > 0


def test_plan_prints_the_monthly_estimate(dev_stack: DevStackCommands) -> None:
    out = dev_stack.plan.out
    assert "Estimated monthly cost (USD" in out
    assert "Estimate only" in out and "prices.yaml" in out
    total = cost.estimate(config.load(dev_config())).monthly
    assert f"total: {total:,.2f} USD per month" in out


def test_plan_json_carries_the_estimate(dev_stack: DevStackCommands) -> None:
    report = dev_stack.plan_json
    assert report["cost"]["estimate"] is True
    assert [s["site"] for s in report["cost"]["sites"]] == ["gcp", "azure", "hetzner", "proxmox"]
    assert report["cost"]["monthlyTotal"] == json.loads(GOLDEN.read_text())["monthlyTotal"]


# ---------------------------------------------------------------------------
# resinfra cost --base --head


def write_stack(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"config": values}))
    return path


@pytest.mark.parametrize("provider", ["hetzner", "gcp", "azure"])
def test_two_more_workers_cost_exactly_two_workers(provider: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = copy.deepcopy(dev_config())
    head = copy.deepcopy(base)
    site = next(s for s in head["resinfra:sites"] if s["provider"] == provider)
    site["workers"] += 2
    base_file = write_stack(tmp_path / "Pulumi.base.yaml", base)
    head_file = write_stack(tmp_path / "Pulumi.head.yaml", head)

    assert cli.main(["cost", "--base", str(base_file), "--head", str(head_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    table = cost.price_table()
    if provider == "hetzner":
        worker = table.monthly(table.lookup(Provider.HETZNER, "machine", "cx23", "nbg1")) + table.monthly(
            table.lookup(Provider.HETZNER, "public-ipv4", "primary", "nbg1")
        )
    elif provider == "gcp":
        worker = (
            table.monthly(table.lookup(Provider.GCP, "machine", "e2-small", "europe-west3"))
            + table.monthly(table.lookup(Provider.GCP, "disk", "pd-balanced", "europe-west3"), cost.GCP_BOOT_DISK_GB)
            + table.monthly(table.lookup(Provider.GCP, "public-ipv4", "in-use", "europe-west3"))
        )
    else:
        worker = (
            table.monthly(table.lookup(Provider.AZURE, "machine", "Standard_B1s", "westeurope"))
            + table.monthly(table.lookup(Provider.AZURE, "disk", "StandardSSD_LRS-E4", "westeurope"))
            + table.monthly(table.lookup(Provider.AZURE, "public-ipv4", "standard-static", "westeurope"))
        )
    assert report["monthlyDelta"] == pytest.approx(2 * worker, abs=0.01)
    changed = {s["site"]: s["delta"] for s in report["sites"] if s["delta"]}
    assert list(changed) == [provider]
    assert changed[provider] == pytest.approx(2 * worker, abs=0.01)


def test_cost_markdown_for_the_pull_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = copy.deepcopy(dev_config())
    head = copy.deepcopy(base)
    head["resinfra:sites"] = [s for s in head["resinfra:sites"] if s["provider"] != "azure"]
    base_file = write_stack(tmp_path / "Pulumi.base.yaml", base)
    head_file = write_stack(tmp_path / "Pulumi.head.yaml", head)
    assert cli.main(["cost", "--base", str(base_file), "--head", str(head_file), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| site | base | head | change |" in out
    assert "| azure |" in out and "| - |" in out  # removed site: no head figure
    assert "Estimate only" in out


def test_cost_accepts_stack_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cost", "--base", "dev", "--head", "prod"]) == 0
    out = capsys.readouterr().out
    assert "dev -> prod" in out and "total" in out


def test_cost_with_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(dev_config())
    bad["resinfra:cost"] = {"egressGbPerMonth": -1}
    bad_file = write_stack(tmp_path / "Pulumi.bad.yaml", bad)
    assert cli.main(["cost", "--base", "dev", "--head", str(bad_file)]) == 2
    assert "resinfra:cost.egressGbPerMonth" in capsys.readouterr().err


def test_a_gateway_pair_adds_a_vm_its_address_and_a_floating_ip() -> None:
    """The second gateway, its Primary IP and (Hetzner) the Floating IP, priced from the table; and `resinfra plan` says it."""
    cfg = config.load(paired_config())
    table = cost.price_table()
    site = next(s for s in cfg.sites if isinstance(s, config.HetznerSite))
    region = cost.region_of(site)

    def price(item: str, key: str) -> float:
        return table.monthly(table.lookup(Provider.HETZNER, item, key, region))

    size = site.gateway_server_type or site.server_type
    added = cost.gateway_pairs_cost(cfg, table)
    assert added["hetzner"] == pytest.approx(price("machine", size) + price("public-ipv4", "primary") + price("public-ipv4", "floating"))
    assert added["proxmox"] == 0
    text = cli.format_plan(cli.plan_report(run_offline(paired_config()), "dev", Path("Pulumi.dev.yaml"), 1.0))
    assert "Gateway pair of hetzner: both VMs share" in text and f"adds {added['hetzner']:,.2f}" in text
