"""What the clouds refuse: each rule has a bad config naming its key and the fix, nothing is
declared, and the committed stacks still plan while their placeholders are named."""

from __future__ import annotations

import base64
import copy
import ipaddress
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from resinfra import cli, cloud_rules, config
from tests.conftest import ROOT, DevStackCommands, dev_config
from tests.unit.test_config import Mutation, run_entry_point, set_key, set_site, site

DEPLOYABLE_PUBLIC_RANGE = ("198.20.0.16/28", "198.20.0.17")
"""An ordinary unicast range outside every range GCP refuses: stands for the deployer's own."""
COMMITTED_STACKS = ("dev", "staging", "prod")


def deployable(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the Proxmox placeholders replaced as README tells a user to."""
    out = copy.deepcopy(values)
    for s in out["resinfra:sites"]:
        if s["provider"] == "proxmox":
            s["publicRange"], s["publicGateway"] = DEPLOYABLE_PUBLIC_RANGE
    return out


def with_public_range(network: str) -> Mutation:
    """Proxmox ``publicRange`` set to the first /28 of ``network``, its router the first host."""
    first = next(ipaddress.IPv4Network(network).subnets(new_prefix=28))

    def mutate(values: dict[str, Any]) -> None:
        set_site("proxmox", "publicRange", str(first))(values)
        set_site("proxmox", "publicGateway", str(first.network_address + 1))(values)

    return mutate


def rsa_public_key(bits: int) -> str:
    """An OpenSSH ``ssh-rsa`` line whose modulus has ``bits`` bits (a shape, not a usable key)."""

    def field(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    modulus = (1 << (bits - 1)) | 1
    blob = field(b"ssh-rsa") + field((65537).to_bytes(3, "big")) + field(b"\x00" + modulus.to_bytes(bits // 8, "big"))
    return f"ssh-rsa {base64.b64encode(blob).decode()} test"


ECDSA_KEY = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= me@laptop"


def hetzner_route_to_public_gateway(values: dict[str, Any]) -> None:
    """A supernet in 172.16.0.0/12 and a GCP block holding 172.31.1.1, which the Hetzner site routes."""
    values["resinfra:supernet"] = "172.16.0.0/12"
    values["resinfra:sites"] = [s for s in values["resinfra:sites"] if s["provider"] in ("gcp", "hetzner")]
    site(values, "gcp")["addressBlock"] = "172.31.0.0/20"


# (id, mutation, key the message must name, words the message or fix must contain)
CLOUD_REFUSALS: list[tuple[str, Mutation, str, str]] = [
    ("azure-reserved-admin-user", set_key("resinfra:adminUser", "admin"), "resinfra:adminUser", "reserved name"),
    ("azure-root-admin-user", set_key("resinfra:adminUser", "root"), "resinfra:adminUser", "use another name"),
    ("azure-ecdsa-key", set_key("resinfra:sshPublicKey", ECDSA_KEY), "resinfra:sshPublicKey", "ssh-keygen -t ed25519"),
    ("azure-short-rsa-key", set_key("resinfra:sshPublicKey", rsa_public_key(1024)), "resinfra:sshPublicKey", "1024 bits"),
    ("hetzner-route-to-172.31.1.1", hetzner_route_to_public_gateway, "resinfra:sites[0].addressBlock", "172.31.1.1"),
    ("proxmox-ssh-port-without-address", set_site("proxmox", "nodeSshPort", 2222), "resinfra:sites[3].nodeSshPort", "set nodeAddress"),
    ("proxmox-node-address-not-a-host", set_site("proxmox", "nodeAddress", "pve 1"), "resinfra:sites[3].nodeAddress", "host name or IPv4"),
]


def bad(mutation: Mutation) -> dict[str, Any]:
    values = deployable(dev_config())
    mutation(values)
    return values


@pytest.mark.parametrize(("case", "mutation", "key", "words"), CLOUD_REFUSALS, ids=[c[0] for c in CLOUD_REFUSALS])
def test_a_value_the_cloud_refuses_names_its_key_and_the_fix(case: str, mutation: Mutation, key: str, words: str) -> None:
    for deployment in (False, True):
        with pytest.raises(config.ConfigError) as caught:
            config.load(bad(mutation), deployment=deployment)
        problems = caught.value.problems
        assert [p.key for p in problems] == [key], f"{case}: {caught.value}"
        assert words.lower() in str(problems[0]).lower()


@pytest.mark.parametrize(("case", "mutation", "key", "words"), CLOUD_REFUSALS, ids=[c[0] for c in CLOUD_REFUSALS])
def test_a_value_the_cloud_refuses_declares_nothing(case: str, mutation: Mutation, key: str, words: str) -> None:
    declared = run_entry_point(bad(mutation))
    assert declared.error is not None and key in declared.error
    assert declared.resource_types == ["pulumi:pulumi:Stack"]


def test_the_azure_rules_hold_only_with_an_azure_site() -> None:
    values = bad(set_key("resinfra:adminUser", "admin"))
    values["resinfra:sshPublicKey"] = ECDSA_KEY
    values["resinfra:sites"] = [s for s in values["resinfra:sites"] if s["provider"] != "azure"]
    assert config.load(values, deployment=True).admin_user == "admin"


def test_rsa_keys_of_2048_bits_and_ed25519_keys_pass_on_azure() -> None:
    assert config.load(bad(set_key("resinfra:sshPublicKey", rsa_public_key(2048))), deployment=True)
    assert cloud_rules.ssh_key_kind(rsa_public_key(3072)) == ("ssh-rsa", 3072)
    assert cloud_rules.ssh_key_kind(dev_config()["resinfra:sshPublicKey"]) == ("ssh-ed25519", None)


def test_a_site_block_without_172_31_1_1_is_routed_by_hetzner() -> None:
    values = bad(hetzner_route_to_public_gateway)
    site(values, "gcp")["addressBlock"] = "172.31.16.0/20"
    assert config.load(values, deployment=True)


# ---------------------------------------------------------------------------
# Peer addresses: what GCP's validatePeerAddr refuses


@pytest.mark.parametrize("reserved", cloud_rules.GCP_REFUSED_PEER_RANGES, ids=[str(r.network) for r in cloud_rules.GCP_REFUSED_PEER_RANGES])
def test_a_proxmox_gateway_address_gcp_refuses_stops_a_real_deployment(reserved: cloud_rules.ReservedRange) -> None:
    values = bad(with_public_range(str(reserved.network)))
    with pytest.raises(config.ConfigError) as caught:
        config.load(values, deployment=True)
    refused = [p for p in caught.value.problems if "validatePeerAddr" in p.message]
    assert [p.key for p in refused] == ["resinfra:sites[3].publicRange"], str(caught.value)
    assert str(reserved.network) in refused[0].message and "addresses you own" in refused[0].fix
    # Offline (plan, render, the lab) it is a warning only, unless another rule refuses the range anyway.
    if not config.is_rfc1918(reserved.network):
        proxmox = config.load(values).sites[3]
        assert isinstance(proxmox, config.ProxmoxSite) and proxmox.public_range == str(next(reserved.network.subnets(new_prefix=28)))


def test_the_refused_ranges_are_validatepeeraddr_s_list() -> None:
    """The list as the Google provider has it (resource_compute_vpn_tunnel.go, invalidPeerAddrs)."""
    expected = "0.0.0.0/8 10.0.0.0/8 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 192.0.2.0/24 192.88.99.0/24 192.168.0.0/16 198.18.0.0/15 198.51.100.0/24 203.0.113.0/24 224.0.0.0/4 240.0.0.0/4"
    assert [str(r.network) for r in cloud_rules.GCP_REFUSED_PEER_RANGES] == expected.split()
    # 100.64.0.0/10 (shared address space) is not in it: GCP accepts it, and so does the check.
    assert cloud_rules.refused_range(ipaddress.IPv4Address("100.64.0.1")) is None


def test_without_a_gcp_site_the_reason_is_reachability() -> None:
    values = dev_config()
    values["resinfra:sites"] = [s for s in values["resinfra:sites"] if s["provider"] in ("hetzner", "proxmox")]
    with pytest.raises(config.ConfigError) as caught:
        config.load(values, deployment=True)
    (problem,) = caught.value.problems
    assert problem.key == "resinfra:sites[1].publicRange"
    assert "no peer can reach it" in problem.message and "GCP" not in problem.message


def test_the_real_entry_point_refuses_the_placeholders_and_declares_nothing() -> None:
    declared = run_entry_point(dev_config())
    assert declared.error is not None and "resinfra:sites[3].publicRange" in declared.error
    assert declared.resource_types == ["pulumi:pulumi:Stack"]
    assert run_entry_point(deployable(dev_config())).error is None


# ---------------------------------------------------------------------------
# The committed stacks: plan, render and the lab keep working and say what is a placeholder


def stack_values(name: str) -> dict[str, Any]:
    """A committed stack's values with the secrets its deployment has set (the SSH key; a Hetzner pair's token)."""
    values = {**yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())["config"], "resinfra:sshPrivateKey": "x"}
    return values | {f"{config.NAMESPACE}:{key}": "x" for key in config.conditional_secret_keys(values)}


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_a_committed_stack_is_valid_offline_and_refused_only_for_its_placeholders(stack: str) -> None:
    values = stack_values(stack)
    assert config.load(values)
    with pytest.raises(config.ConfigError) as caught:
        config.load(values, deployment=True)
    assert [p.key for p in caught.value.problems] == ["resinfra:sites[3].publicRange"]
    assert config.load(deployable(values), deployment=True)


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_plan_of_a_committed_stack_names_its_placeholders_near_the_top(stack: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--stack", stack]) == 0
    lines = capsys.readouterr().out.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("REFUSED BY A REAL DEPLOYMENT"))
    assert heading < next(i for i, line in enumerate(lines) if line.startswith("Address plan"))
    assert "resinfra:sites[3].publicRange" in lines[heading + 1] and "Fix: set publicRange" in lines[heading + 1]
    assert any(line.startswith("  - resinfra:adminCidrs[0]") for line in lines[heading:])


def test_plan_json_and_render_carry_the_warning(dev_stack: DevStackCommands) -> None:
    report = dev_stack.plan_json
    assert [r["key"] for r in report["refusedByDeployment"]] == ["resinfra:sites[3].publicRange"]
    assert [n["key"] for n in report["placeholderNotes"]] == ["resinfra:adminCidrs[0]"]
    _, render = dev_stack.render
    assert "REFUSED BY A REAL DEPLOYMENT" in render.err


def test_a_deployable_stack_plans_without_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = deployable(stack_values("dev"))
    values["resinfra:adminCidrs"] = ["198.20.1.0/24"]
    path = tmp_path / "Pulumi.mine.yaml"
    path.write_text(yaml.safe_dump({"config": {k: v for k, v in values.items() if k != "resinfra:sshPrivateKey"}}))
    assert cli.main(["plan", "--config-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "REFUSED BY A REAL DEPLOYMENT" not in out and "Placeholders" not in out


def test_every_user_data_fits_its_cloud(offline_runs: dict[str, Any]) -> None:
    """The rendered user-data (stock mode, the largest: the tooling VM and the probers) against each cloud's limit."""
    run = offline_runs["all-four"]
    sizes = {
        config.Provider.HETZNER: [len(r.inputs["userData"].encode()) for r in run.of_type("hcloud:index/server:Server")],
        config.Provider.AZURE: [len(base64.b64decode(r.inputs["osProfile"]["customData"])) for r in run.of_type("azure-native:compute:VirtualMachine")],
        config.Provider.GCP: [len(r.inputs["metadata"]["user-data"].encode()) for r in run.of_type("gcp:compute/instance:Instance")],
    }
    for provider, found in sizes.items():
        assert found and max(found) <= cloud_rules.USER_DATA_LIMITS[provider], (provider, found)
