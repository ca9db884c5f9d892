"""Bad stack configs: each gives one clear message naming its key, exit 2, and nothing declared."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from resinfra import cli, config
from resinfra.offline import CloudMocks, RecordingMonitor, config_values
from tests.conftest import dev_config

Mutation = Callable[[dict[str, Any]], None]


def site(values: dict[str, Any], provider: str) -> dict[str, Any]:
    return next(s for s in values["resinfra:sites"] if s["provider"] == provider)


def set_key(key: str, value: Any) -> Mutation:
    return lambda v: v.__setitem__(key, value)


def set_site(provider: str, key: str, value: Any) -> Mutation:
    return lambda v: site(v, provider).__setitem__(key, value)


def drop_site_key(provider: str, key: str) -> Mutation:
    return lambda v: site(v, provider).pop(key)


def add_site(extra: dict[str, Any]) -> Mutation:
    return lambda v: v["resinfra:sites"].append(extra)


# (id, mutation, key the message must name, words the message or fix must contain)
BAD_CONFIGS: list[tuple[str, Mutation, str, str]] = [
    ("overlapping-blocks", lambda v: set_site("gcp", "addressBlock", "10.10.32.0/21")(v), "resinfra:sites[0].addressBlock", "overlaps"),
    ("block-outside-supernet", set_site("azure", "addressBlock", "10.20.0.0/20"), "resinfra:sites[1].addressBlock", "outside"),
    ("block-too-small", set_site("azure", "addressBlock", "10.10.32.0/24"), "resinfra:sites[1].addressBlock", "/23"),
    ("block-in-reserved-first-block", set_site("azure", "addressBlock", "10.10.0.0/20"), "resinfra:sites[1].addressBlock", "reserved"),
    ("duplicate-site-name", set_site("azure", "name", "gcp"), "resinfra:sites[1].name", "own name"),
    ("duplicate-site-number", set_site("azure", "number", 1), "resinfra:sites[1].number", "own number"),
    ("site-number-beyond-supernet", set_site("azure", "number", 16), "resinfra:sites[1].number", "1 to 15"),
    ("unknown-provider", set_site("azure", "provider", "aws"), "resinfra:sites[1].provider", "gcp, azure, hetzner, proxmox"),
    ("missing-provider", drop_site_key("hetzner", "provider"), "resinfra:sites[2].provider", "add 'provider:'"),
    ("unknown-top-level-key", lambda v: v.__setitem__("resinfra:adminCidr", ["10.0.0.0/8"]), "resinfra:adminCidr", "did you mean 'adminCidrs'"),
    ("unknown-site-key", set_site("gcp", "machineTyp", "e2-small"), "resinfra:sites[0].machineTyp", "did you mean 'machineType'"),
    # Secret keys are known keys too: a misspelled one gets its suggestion (issue 16).
    ("secret-key-typo", set_key("resinfra:sshPrivatekey", "a key"), "resinfra:sshPrivatekey", "did you mean 'sshPrivateKey'"),
    (
        "optional-secret-key-typo",
        set_key("resinfra:notificationWebhookUrls", "https://x"),
        "resinfra:notificationWebhookUrls",
        "did you mean 'notificationWebhookUrl'",
    ),
    ("zero-workers", set_site("hetzner", "workers", 0), "resinfra:sites[2].workers", "between 1 and 100"),
    ("too-many-workers", set_site("hetzner", "workers", 101), "resinfra:sites[2].workers", "between 1 and 100"),
    ("invalid-admin-cidr", set_key("resinfra:adminCidrs", ["10.0.0.300/24"]), "resinfra:adminCidrs[0]", "IPv4"),
    ("supernet-host-bits", set_key("resinfra:supernet", "10.10.1.0/16"), "resinfra:supernet", "no host bits"),
    ("public-supernet", set_key("resinfra:supernet", "8.8.0.0/16"), "resinfra:supernet", "10.0.0.0/8"),
    ("site-prefix-not-smaller", set_key("resinfra:sitePrefixLength", 16), "resinfra:sitePrefixLength", "greater than 16"),
    ("invalid-public-gateway", set_site("proxmox", "publicGateway", "203.0.113.999"), "resinfra:sites[3].publicGateway", "IPv4"),
    ("public-gateway-outside-range", set_site("proxmox", "publicGateway", "198.51.100.1"), "resinfra:sites[3].publicGateway", "inside publicRange"),
    ("proxmox-range-too-small", set_site("proxmox", "publicRange", "203.0.113.16/30"), "resinfra:sites[3].publicRange", "larger range"),
    (
        "proxmox-private-range",
        lambda v: (set_site("proxmox", "publicRange", "192.168.1.0/24")(v), set_site("proxmox", "publicGateway", "192.168.1.1")(v)),
        "resinfra:sites[3].publicRange",
        "private",
    ),
    ("ssh-from-anywhere", set_key("resinfra:adminCidrs", ["0.0.0.0/0"]), "resinfra:adminCidrs[0]", "allowSshFromAnywhere"),
    # Two halves are the whole internet: judged together, not by the prefix of one entry.
    ("ssh-from-anywhere-in-two-halves", set_key("resinfra:adminCidrs", ["0.0.0.0/1", "128.0.0.0/1"]), "resinfra:adminCidrs[0]", "allowSshFromAnywhere"),
    ("ssh-from-a-public-slash-8", set_key("resinfra:adminCidrs", ["198.51.100.0/24", "11.0.0.0/8"]), "resinfra:adminCidrs[1]", "public /8 or wider"),
    # Sixteen /12s, each small enough alone, are 11.0.0.0/8 together.
    ("ssh-from-a-slash-8-in-pieces", set_key("resinfra:adminCidrs", [f"11.{16 * i}.0.0/12" for i in range(16)]), "resinfra:adminCidrs", "11.0.0.0/8"),
    ("ssh-from-ranges-too-large-together", set_key("resinfra:adminCidrs", ["1.0.0.0/11", "2.0.0.0/11"]), "resinfra:adminCidrs", "adminCidrsMaxShare"),
    ("missing-ssh-key", lambda v: v.pop("resinfra:sshPublicKey"), "resinfra:sshPublicKey", "missing"),
    ("missing-ssh-private-key", lambda v: v.pop("resinfra:sshPrivateKey"), "resinfra:sshPrivateKey", "pulumi config set --secret"),
    ("not-an-ssh-key", set_key("resinfra:sshPublicKey", "AAAAC3NzaC1lZDI1NTE5 me@laptop"), "resinfra:sshPublicKey", "ssh-ed25519"),
    (
        "name-too-long-for-gcp",
        lambda v: (set_key("resinfra:prefix", "a-very-long-prefix-for-names")(v), set_site("gcp", "name", "google-cloud-frankfurt-zone")(v)),
        "resinfra:sites[0].name",
        "63 characters",
    ),
    ("name-bad-charset", set_site("hetzner", "name", "Hetzner_1"), "resinfra:sites[2].name", "lowercase letters"),
    ("prefix-bad-charset", set_key("resinfra:prefix", "ri.dev"), "resinfra:prefix", "lowercase letters"),
    ("azure-resource-group-charset", set_site("azure", "resourceGroup", "rg with spaces"), "resinfra:sites[1].resourceGroup", "at most 90"),
    ("azure-reserved-asn", set_site("azure", "asn", 65517), "resinfra:sites[1].asn", "65515"),
    ("gcp-public-asn", set_site("gcp", "asn", 15169), "resinfra:sites[0].asn", "private ASN"),
    ("duplicate-asn", set_site("azure", "asn", 64514), "resinfra:sites[1].asn", "own private ASN"),
    ("gcp-zone-not-in-region", set_site("gcp", "zone", "us-east1-b"), "resinfra:sites[0].zone", "europe-west3"),
    ("gcp-missing-project", drop_site_key("gcp", "project"), "resinfra:sites[0].project", "missing"),
    ("hetzner-zone-mismatch", set_site("hetzner", "networkZone", "us-east"), "resinfra:sites[2].networkZone", "eu-central"),
    ("hetzner-unknown-location", set_site("hetzner", "location", "fra1"), "resinfra:sites[2].location", "fsn1"),
    (
        "two-gcp-sites",
        add_site({**copy.deepcopy(dev_config()["resinfra:sites"][0]), "name": "gcp2", "number": 5, "asn": 64600}),
        "resinfra:sites[4].provider",
        "not supported yet",
    ),
    ("no-sites", set_key("resinfra:sites", []), "resinfra:sites", "at least one"),
    ("tooling-on-unknown-site", set_key("resinfra:tooling", {"site": "aws"}), "resinfra:tooling.site", "gcp, azure, hetzner, proxmox"),
    ("tooling-typo", set_key("resinfra:tooling", {"sit": "gcp"}), "resinfra:tooling.sit", "did you mean 'site'"),
    ("sites-not-a-list", set_key("resinfra:sites", "gcp"), "resinfra:sites", "list"),
    ("negative-egress", set_key("resinfra:cost", {"egressGbPerMonth": -5}), "resinfra:cost.egressGbPerMonth", "GB each site sends"),
    ("egress-not-a-number", set_key("resinfra:cost", {"egressGbPerMonth": "lots"}), "resinfra:cost.egressGbPerMonth", "not a number"),
    ("egress-beyond-plausible", set_key("resinfra:cost", {"egressGbPerMonth": 5_000_000}), "resinfra:cost.egressGbPerMonth", "from 0 to"),
    ("cost-typo", set_key("resinfra:cost", {"egressGb": 10}), "resinfra:cost.egressGb", "did you mean 'egressGbPerMonth'"),
    ("gcp-asn-reserved-by-azure", set_site("gcp", "asn", 65518), "resinfra:sites[0].asn", "reserved by Azure"),
    ("bgp-site-number-beyond-apipa-range", set_site("azure", "number", 12), "resinfra:sites[1].number", "169.254.21.0-169.254.22.255"),
    (
        "tunnel-names-too-long-for-gcp",
        lambda v: (
            set_key("resinfra:prefix", "ri")(v),
            set_site("gcp", "name", "google-cloud-frankfurt-zone-aa")(v),
            set_site("hetzner", "name", "hetzner-nuremberg-datacenter-1")(v),
        ),
        "resinfra:sites[0].name",
        "tunnel resource names",
    ),
    ("notification-url-not-a-url", set_key("resinfra:notificationWebhookUrl", "hooks.example.org/x"), "resinfra:notificationWebhookUrl", "--secret"),
    ("healer-max-unhealthy-form", set_key("resinfra:healer", {"maxUnhealthy": "a third"}), "resinfra:healer.maxUnhealthy", "percentage from 0% to 100%"),
    ("healer-max-unhealthy-over-100", set_key("resinfra:healer", {"maxUnhealthyPerSite": "150%"}), "resinfra:healer.maxUnhealthyPerSite", "0% to 100%"),
    ("healer-cooldown-too-short", set_key("resinfra:healer", {"cooldownSeconds": 5}), "resinfra:healer.cooldownSeconds", "60 to 86400"),
    ("healer-flap-threshold-one", set_key("resinfra:healer", {"flapThreshold": 1}), "resinfra:healer.flapThreshold", "2 to 100"),
    ("healer-typo", set_key("resinfra:healer", {"dryrun": True}), "resinfra:healer.dryrun", "did you mean 'dryRun'"),
    ("healer-local-backend", set_key("resinfra:healer", {"backendUrl": "file:///home/me/.pulumi"}), "resinfra:healer.backendUrl", "one machine only"),
    (
        "healer-backoff-below-cooldown",
        set_key("resinfra:healer", {"cooldownSeconds": 900, "maxBackoffSeconds": 600}),
        "resinfra:healer.maxBackoffSeconds",
        "at least the cooldown",
    ),
    ("healer-environment-unknown-variable", set_key("resinfra:healerEnvironment", '{"LD_PRELOAD": "/tmp/x.so"}'), "resinfra:healerEnvironment", "HCLOUD_TOKEN"),
    ("healer-environment-not-a-map", set_key("resinfra:healerEnvironment", "HCLOUD_TOKEN=abc"), "resinfra:healerEnvironment", "--path"),
    (
        "healer-google-credentials-not-a-key",
        set_key("resinfra:healerGoogleCredentials", "not-a-key-file"),
        "resinfra:healerGoogleCredentials",
        "service-account key",
    ),
    ("latency-threshold-zero", set_key("resinfra:tooling", {"latencyThresholdMs": 0}), "resinfra:tooling.latencyThresholdMs", "greater than or equal to 1"),
    # Images (images/): the retired one-image key, lookups packer mode needs, roles a site has.
    ("retired-image-key", set_site("hetzner", "image", "my-snapshot"), "resinfra:sites[2].image", 'overrides: {worker: "my-snapshot", gateway: "my-snapshot"'),
    ("image-mode-typo", set_site("hetzner", "images", {"mode": "baked"}), "resinfra:sites[2].images.mode", "'stock' or 'packer'"),
    ("images-unknown-key", set_site("gcp", "images", {"family": "x"}), "resinfra:sites[0].images.family", "known keys here: mode, name, overrides, project"),
    ("azure-packer-without-resource-group", set_site("azure", "images", {"mode": "packer"}), "resinfra:sites[1].images.resourceGroup", "resource_group"),
    (
        "proxmox-packer-without-templates",
        set_site("proxmox", "images", {"mode": "packer", "templates": {"worker": 9001}}),
        "resinfra:sites[3].images.templates",
        "gateway role",
    ),
    ("gateway-image-on-gcp", set_site("gcp", "images", {"overrides": {"gateway": "x"}}), "resinfra:sites[0].images.overrides.gateway", "no gateway VM"),
    (
        "hcloud-selector-syntax",
        set_site("hetzner", "images", {"mode": "packer", "selector": "resinfra-build = 1"}),
        "resinfra:sites[2].images.selector",
        "label selector",
    ),
    (
        "hcloud-selector-with-role",
        set_site("hetzner", "images", {"selector": "resinfra-role=worker"}),
        "resinfra:sites[2].images.selector",
        "remove the resinfra-role term",
    ),
    (
        "azure-override-not-an-id",
        set_site("azure", "images", {"overrides": {"worker": "ubuntu"}}),
        "resinfra:sites[1].images.overrides.worker",
        "resource id: /subscriptions/",
    ),
    # Issue 15: a gateway pair exists only where the program runs the gateway VM, and is a pair.
    ("gateways-on-a-managed-gateway-site", set_site("gcp", "gateways", 2), "resinfra:sites[0].gateways", "no gateway VM"),
    ("gateways-three", set_site("hetzner", "gateways", 3), "resinfra:sites[2].gateways", "one strongSwan gateway VM or a pair"),
    ("gateways-zero", set_site("proxmox", "gateways", 0), "resinfra:sites[3].gateways", "use 1, or 2"),
    ("hetzner-pair-without-its-token", set_site("hetzner", "gateways", 2), "resinfra:hetznerFailoverToken", "Read & Write"),
    (
        "proxmox-pair-range-too-small",
        lambda v: (set_site("proxmox", "gateways", 2)(v), set_site("proxmox", "workers", 10)(v)),
        "resinfra:sites[3].publicRange",
        "the two gateway VMs",
    ),
]


def bad(mutation: Mutation) -> dict[str, Any]:
    values = copy.deepcopy(dev_config())
    mutation(values)
    return values


def test_there_are_at_least_twenty_distinct_bad_configs() -> None:
    assert len({case[0] for case in BAD_CONFIGS}) >= 20


def test_the_dev_stack_is_valid() -> None:
    cfg = config.load(dev_config())
    assert [s.name for s in cfg.sites] == ["gcp", "azure", "hetzner", "proxmox"]


@pytest.mark.parametrize(("case", "mutation", "key", "words"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_its_key_and_the_fix(case: str, mutation: Mutation, key: str, words: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(bad(mutation))
    problems = caught.value.problems
    assert len(problems) == 1, f"{case}: expected one problem, got {caught.value}"
    assert problems[0].key == key
    assert words.lower() in str(problems[0]).lower()
    assert problems[0].fix, "every problem says how to fix it"


@pytest.mark.parametrize(("case", "mutation", "key", "words"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_declares_nothing_through_the_real_entry_point(case: str, mutation: Mutation, key: str, words: str) -> None:
    """``pulumi up`` runs stack.main: it must fail with the message before any resource exists."""
    declared = run_entry_point(bad(mutation))
    assert declared.error is not None and key in declared.error
    assert declared.resource_types == ["pulumi:pulumi:Stack"]


def test_plan_exits_2_with_the_message(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump({"config": bad(set_site("hetzner", "workers", 0))}))
    assert cli.main(["plan", "--config-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "resinfra:sites[2].workers" in err and "between 1 and 100" in err


def test_plan_exits_2_for_a_missing_stack_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--stack", "does-not-exist"]) == 2
    assert "Pulumi.does-not-exist.yaml" in capsys.readouterr().err


def test_an_unknown_key_without_a_close_match_is_a_sentence() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(bad(set_key("resinfra:colour", "blue")))
    [problem] = caught.value.problems
    assert "Fix: remove it. Known keys here: " in str(problem)
    assert "sshPrivateKey" in problem.fix and "healerEnvironment" in problem.fix, "the secret keys are known keys"


def test_several_problems_are_reported_together() -> None:
    values = bad(lambda v: (set_site("hetzner", "workers", 0)(v), set_key("resinfra:adminCidrs", ["nonsense"])(v)))
    with pytest.raises(config.ConfigError) as caught:
        config.load(values)
    assert {p.key for p in caught.value.problems} == {"resinfra:sites[2].workers", "resinfra:adminCidrs[0]"}


@pytest.mark.parametrize("cidrs", [["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], ["198.51.100.0/24", "203.0.113.0/24"], ["1.0.0.0/11"]])
def test_private_and_office_sized_admin_ranges_are_accepted(cidrs: list[str]) -> None:
    assert config.load(bad(set_key("resinfra:adminCidrs", cidrs))).admin_cidrs == cidrs


def test_the_share_is_configurable() -> None:
    values = bad(lambda v: (set_key("resinfra:adminCidrs", ["1.0.0.0/9"])(v), set_key("resinfra:adminCidrsMaxShare", 0.01)(v)))
    assert config.load(values).admin_cidrs == ["1.0.0.0/9"]


def test_allow_ssh_from_anywhere_accepts_the_world() -> None:
    values = bad(lambda v: (set_key("resinfra:adminCidrs", ["0.0.0.0/0"])(v), set_key("resinfra:allowSshFromAnywhere", True)(v)))
    assert config.load(values).admin_cidrs == ["0.0.0.0/0"]


def test_json_strings_from_the_engine_are_parsed() -> None:
    """The engine hands structured config to the program as JSON text."""
    assert config.load(config_values(dev_config())).sites[3].provider == "proxmox"


class Declared:
    def __init__(self, error: str | None, resource_types: list[str]):
        self.error = error
        self.resource_types = resource_types


def run_entry_point(values: dict[str, Any]) -> Declared:
    """Run ``resinfra.stack.main`` under mocks exactly as ``pulumi up`` would, without pre-validation."""
    from resinfra import stack

    monitor = RecordingMonitor(CloudMocks())
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(monitor.mocks, project="resinfra", stack="dev", preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config_values(values), ["resinfra:sshPrivateKey"])
    error: list[str] = []

    @pulumi.runtime.test
    def program() -> None:
        try:
            stack.main(export=lambda k, v: None)
        except pulumi.RunError as err:
            error.append(str(err))

    program()
    return Declared(error[0] if error else None, [r.type for r in monitor.declared.values()])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("healerEnvironment", '{"HCLOUD_TOKEN": "tok-sentinel-1", "EXTRA_sentinel": "v"}'),
        ("healerEnvironment", "tok-sentinel-2"),
        ("healerGoogleCredentials", "key-sentinel-3"),
    ],
)
def test_healer_credentials_are_checked_without_being_shown(key: str, value: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load({**dev_config(), f"resinfra:{key}": value})
    assert "sentinel-" not in str(caught.value)
