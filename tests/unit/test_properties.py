"""Property tests: generated valid configs always plan; invalid ones never declare a resource."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resinfra import addressing, config
from resinfra.offline import run_offline
from tests.conftest import dev_config
from tests.unit.test_config import run_entry_point

DEV_SITES = {s["provider"]: s for s in dev_config()["resinfra:sites"]}
PROVIDERS = list(DEV_SITES)

labels = st.from_regex(r"\A[a-z][a-z0-9]{0,6}\Z")


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    providers = draw(st.lists(st.sampled_from(PROVIDERS), min_size=1, max_size=4, unique=True))
    # Azure and GCP sites need numbers up to 11 (their BGP link's APIPA range); 1-11 for all keeps it simple.
    numbers = draw(st.lists(st.integers(1, 11), min_size=len(providers), max_size=len(providers), unique=True))
    names = draw(st.lists(labels, min_size=len(providers), max_size=len(providers), unique=True))
    sites = []
    for provider, number, name in zip(providers, numbers, names, strict=True):
        site = copy.deepcopy(DEV_SITES[provider])
        site.update(name=name, number=number, workers=draw(st.integers(1, 4)))
        if provider == "proxmox":
            site.update(publicRange="203.0.113.0/27", publicGateway="203.0.113.1")
        sites.append(site)
    values = copy.deepcopy(dev_config())
    values.update(
        {
            "resinfra:prefix": draw(labels),
            "resinfra:adminCidrs": draw(
                st.lists(st.sampled_from(["198.51.100.0/24", "192.0.2.7/32", "203.0.113.128/25"]), min_size=1, max_size=3, unique=True)
            ),
            "resinfra:sites": sites,
        }
    )
    return values


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs())
def test_generated_valid_configs_always_plan(values: dict[str, Any]) -> None:
    run = run_offline(values)
    cfg = run.config
    # Workers, a gateway VM per Hetzner or Proxmox site, and the tooling VM.
    expected_machines = sum(s.workers + (1 if s.provider in ("hetzner", "proxmox") else 0) for s in cfg.sites) + 1
    assert len(run.outputs["inventory"]) == expected_machines
    blocks = [ipaddress.IPv4Network(s["block"]) for s in run.outputs["sites"].values()]
    assert all(not a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    assert all(r.name.startswith(cfg.prefix + "-") for r in run.resources if not r.type.startswith("pulumi:pulumi:Stack"))


def _mutate(values: dict[str, Any], kind: str, index: int) -> str:
    """Break ``values`` in one way; returns the key the error must name."""
    sites = values["resinfra:sites"]
    i = index % len(sites)
    if kind == "workers-zero":
        sites[i]["workers"] = 0
        return f"resinfra:sites[{i}].workers"
    if kind == "workers-too-many":
        sites[i]["workers"] = config.MAX_WORKERS + 1 + index
        return f"resinfra:sites[{i}].workers"
    if kind == "typo-key":
        sites[i]["wrokers"] = 2
        return f"resinfra:sites[{i}].wrokers"
    if kind == "world-ssh":
        values["resinfra:adminCidrs"] = ["0.0.0.0/0"]
        return "resinfra:adminCidrs[0]"
    if kind == "bad-cidr":
        values["resinfra:supernet"] = "10.10.0.0/33"
        return "resinfra:supernet"
    if kind == "unknown-provider":
        sites[i]["provider"] = "aws"
        return f"resinfra:sites[{i}].provider"
    if kind == "number-too-big":
        sites[i]["number"] = 16 + index
        return f"resinfra:sites[{i}].number"
    if kind == "bad-name":
        sites[i]["name"] = "Bad_Name"
        return f"resinfra:sites[{i}].name"
    if kind == "duplicate-name" and len(sites) > 1:
        j = (i + 1) % len(sites)
        sites[j]["name"] = sites[i]["name"]
        return f"resinfra:sites[{max(i, j)}].name"
    values.pop("resinfra:sshPublicKey")
    return "resinfra:sshPublicKey"


MUTATIONS = [
    "workers-zero",
    "workers-too-many",
    "typo-key",
    "world-ssh",
    "bad-cidr",
    "unknown-provider",
    "number-too-big",
    "bad-name",
    "duplicate-name",
    "no-key",
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs(), st.sampled_from(MUTATIONS), st.integers(0, 3))
def test_invalid_configs_never_declare_a_resource(values: dict[str, Any], kind: str, index: int) -> None:
    key = _mutate(values, kind, index)
    declared = run_entry_point(values)
    assert declared.error is not None and key in declared.error, declared.error
    assert declared.resource_types == ["pulumi:pulumi:Stack"]


@settings(max_examples=50, deadline=None)
@given(valid_configs(), st.data())
def test_removing_a_site_moves_no_other_site(values: dict[str, Any], data: st.DataObject) -> None:
    cfg = config.load(values)
    full = addressing.plan(cfg)
    if len(cfg.sites) < 2:
        return
    drop = data.draw(st.integers(0, len(cfg.sites) - 1))
    smaller = copy.deepcopy(values)
    del smaller["resinfra:sites"][drop]
    reduced = addressing.plan(config.load(smaller))
    for name, site_plan in reduced.items():
        before = full[name]
        assert (site_plan.block, site_plan.subnet, site_plan.gateway_subnet, site_plan.gateway_vm, site_plan.workers) == (
            before.block,
            before.subnet,
            before.gateway_subnet,
            before.gateway_vm,
            before.workers,
        )
