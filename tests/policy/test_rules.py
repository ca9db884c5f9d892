"""Every policy's plain function on fixtures: each passes its good inputs and catches each seeded violation."""

from __future__ import annotations

import pytest
from pulumi_policy.proxy import unknown_checking_proxy
from resinfra_policies import crypto, exposure
from resinfra_policies.common import Context, labels_of, stack_of_urn
from resinfra_policies.registry import POLICIES, Level, evaluate

from tests.policy.fixtures import CASES, STRONG_SWANCTL, Case

BY_NAME = {p.name: p for p in POLICIES}


def run(case: Case) -> list[str]:
    context = Context(stack=case.stack, provider_props=case.provider_props or {})
    return BY_NAME[case.policy].check(case.type, case.props, context)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fixture(case: Case) -> None:
    violations = run(case)
    if case.violates:
        assert violations, f"{case.policy} missed the seeded violation {case.id}"
    else:
        assert violations == [], f"{case.policy} flagged a compliant resource: {violations}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fixture_through_pulumi_policys_proxies(case: Case) -> None:
    """Under the engine, rules get pulumi-policy's read-only proxies, not dicts and lists: same verdicts."""
    context = Context(stack=case.stack, provider_props=case.provider_props or {})
    proxied = unknown_checking_proxy(case.props)
    assert BY_NAME[case.policy].check(case.type, proxied, context) == run(case)


def test_every_policy_has_a_passing_and_a_violating_fixture() -> None:
    for policy in POLICIES:
        kinds = {c.violates for c in CASES if c.policy == policy.name}
        assert kinds == {True, False}, f"{policy.name} lacks a {'passing' if True in kinds else 'violating'} fixture"


def test_levels_are_chosen_per_policy() -> None:
    levels = {p.name: p.level for p in POLICIES}
    assert levels["no-public-admin-ports"] is Level.MANDATORY
    assert levels["strong-ipsec-crypto"] is Level.MANDATORY
    assert levels["resinfra-labels"] is Level.ADVISORY
    assert all(p.why for p in POLICIES)


def test_violation_messages_say_what_and_how() -> None:
    messages = evaluate(
        "hcloud:index/firewall:Firewall", {"rules": [{"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["0.0.0.0/0"]}]}, Context("dev")
    )
    assert messages["no-public-admin-ports"] == [
        "Hetzner firewall rule opens SSH (22) to 0.0.0.0/0: allow admin ports only from resinfra:adminCidrs or the supernet"
    ]


def test_stack_of_urn() -> None:
    assert stack_of_urn("urn:pulumi:prod::resinfra::hcloud:index/server:Server::x") == "prod"
    assert stack_of_urn("urn:pulumi:dev::resinfra::resinfra:sites:HetznerSite$hcloud:index/server:Server::x") == "dev"


def test_port_specs() -> None:
    assert exposure.ports_of("22") == {22}
    assert exposure.ports_of("20-30") == {22}
    assert exposure.ports_of("8000:9100", range_sep=":") == {8006, 9090, 9093, 9100}
    assert exposure.ports_of("443") == set()
    assert exposure.ports_of("*") is None
    assert exposure.is_world("Internet") and exposure.is_world("::/0") and not exposure.is_world("10.0.0.0/8")


def test_swanctl_parser_reads_nested_sections() -> None:
    (block,) = crypto.parse_swanctl_connections("#!/bin/bash\ncat <<'EOF'\n" + STRONG_SWANCTL + "EOF\n")
    assert block["gcp"]["version"] == "2"  # type: ignore[index]
    assert block["gcp"]["children"]["gcp"]["esp_proposals"] == "aes256gcm16-ecp384"  # type: ignore[index]
    assert crypto.weak_proposal_tokens("aes256-sha1-modp1024,aes256gcm16-ecp384") == ["sha1", "modp1024"]


def test_proxmox_tags_become_labels() -> None:
    labels = labels_of("proxmoxve:index/vmLegacy:VmLegacy", {"tags": ["resinfra-site-pve", "resinfra-stack-dev", "other"]})
    assert labels == {"resinfra-site": "pve", "resinfra-stack": "dev"}


def test_sources_are_judged_together() -> None:
    assert exposure.too_wide(["0.0.0.0/1", "128.0.0.0/1"]) == "0.0.0.0/0"
    assert exposure.too_wide(["198.51.100.0/24", "203.0.113.0/24"]) is None
    assert exposure.too_wide(["1.0.0.0/11", "2.0.0.0/11"]) is not None, "over the share together"
    assert exposure.too_wide(["1.0.0.0/11", "2.0.0.0/11"], max_share=0.01) is None, "the share is the pack config's"
    assert exposure.too_wide(["2001:db8::/32"]) is None and exposure.too_wide(["2000::/3"]) == "2000::/3"


def test_the_pack_and_the_config_agree_on_what_is_not_public() -> None:
    from resinfra.config import NOT_PUBLIC_IPV4

    assert exposure.NOT_PUBLIC_IPV4 == NOT_PUBLIC_IPV4
