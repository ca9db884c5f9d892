"""Declared arguments that the providers' APIs constrain beyond their types (provider audit)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from resinfra.offline import run_offline
from tests.conftest import ROOT, shape


def with_azure(values: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """``values`` with the Azure site's settings updated."""
    next(s for s in values["resinfra:sites"] if s["provider"] == "azure").update(settings)
    return values


@pytest.mark.parametrize(
    ("sku", "generation"),
    [("VpnGw1AZ", "Generation1"), ("VpnGw3AZ", "Generation1"), ("VpnGw4AZ", "Generation2"), ("VpnGw5AZ", "Generation2")],
)
def test_vnet_gateway_generation_offers_the_sku(sku: str, generation: str) -> None:
    # Azure has VpnGw4AZ/VpnGw5AZ only in Generation2 and VpnGw1AZ only in Generation1.
    run = run_offline(with_azure(shape("azure"), gatewaySku=sku))
    (gateway,) = run.of_type("azure-native:network:VirtualNetworkGateway")
    assert gateway.inputs["sku"] == {"name": sku, "tier": sku}
    assert gateway.inputs["vpnGatewayGeneration"] == generation


def test_azure_vm_replaced_when_create_only_inputs_change() -> None:
    # Azure refuses in-place changes of customData, adminUsername, SSH keys and the image
    # (PropertyChangeNotAllowed); azure-native would plan an update that then fails.
    run = run_offline(shape("azure"))
    vms = run.of_type("azure-native:compute:VirtualMachine")
    assert vms
    for vm in vms:
        assert {"osProfile", "storageProfile.imageReference"} <= set(vm.replace_on_changes), vm.name
        assert vm.delete_before_replace


HETZNER_USER_DATA_LIMIT = 32 * 1024
"""pulumi_hcloud Server ``user_data``: "This field is limited to 32KiB"."""
AZURE_CUSTOM_DATA_LIMIT = 65535
"""Azure OSProfile ``customData``: "The maximum length of the binary array is 65535 bytes"
(decoded; 87,380 characters of base64)."""
GCE_METADATA_VALUE_LIMIT = 262144
"""GCE Metadata ``items[].value``: "their size must be less than or equal to 262144 bytes (256 KiB)"."""


def stack_values(stack: str) -> dict[str, Any]:
    """A committed stack file's config values, as the engine would pass them."""
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def user_data_sizes(run: Any) -> dict[tuple[str, str], tuple[int, int]]:
    """(provider, machine) -> (bytes of user-data as the provider receives it, the provider's limit)."""
    sizes: dict[tuple[str, str], tuple[int, int]] = {}
    for server in run.of_type("hcloud:index/server:Server"):
        sizes["hetzner", server.name] = (len(server.inputs["userData"].encode()), HETZNER_USER_DATA_LIMIT)
    for vm in run.of_type("azure-native:compute:VirtualMachine"):
        encoded = vm.inputs["osProfile"]["customData"]
        assert len(encoded) <= 4 * -(-AZURE_CUSTOM_DATA_LIMIT // 3), vm.name  # 87,380 characters
        sizes["azure", vm.name] = (len(base64.b64decode(encoded)), AZURE_CUSTOM_DATA_LIMIT)
    for instance in run.of_type("gcp:compute/instance:Instance"):
        sizes["gcp", instance.name] = (len(instance.inputs["metadata"]["user-data"].encode()), GCE_METADATA_VALUE_LIMIT)
    return sizes


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_user_data_fits_its_provider(stack: str) -> None:
    # Proxmox reads user-data from a snippet file on the node: no API field, no limit.
    run = run_offline(stack_values(stack), stack_name=stack)
    sizes = user_data_sizes(run)
    measured_providers = {provider for provider, _ in sizes}
    assert measured_providers == {"hetzner", "azure", "gcp"}
    assert any(name.endswith("-tooling") for _, name in sizes), "the tooling VM's user-data is measured"
    too_big = {key: size for key, size in sizes.items() if size[0] > size[1]}
    assert not too_big, f"user-data over the provider's limit (bytes, limit): {too_big}"


def test_a_changed_user_data_replaces_the_vm_on_every_provider() -> None:
    """cloud-init reads user-data at first boot only, so a VM whose user-data changed is replaced,
    never left running the old one. Hetzner forces it itself (``user_data`` is create-only in
    hcloud); Azure refuses the change (``osProfile`` replaces, above); GCE and Proxmox would update
    in place, so they are told."""
    before = run_offline(shape("gcp", "proxmox"))
    values = shape("gcp", "proxmox")
    values["resinfra:sshPublicKey"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey0 rotated"
    after = run_offline(values)
    for vm in after.of_type("gcp:compute/instance:Instance"):
        assert vm.inputs["metadata"]["user-data"] != before.by_name(vm.name).inputs["metadata"]["user-data"]
        assert vm.replace_on_changes == ['metadata["user-data"]'] and vm.delete_before_replace
    files_before = {r.name: r.inputs["sourceRaw"]["fileName"] for r in before.of_type("proxmoxve:index/fileLegacy:FileLegacy")}
    files_after = {r.name: r.inputs["sourceRaw"]["fileName"] for r in after.of_type("proxmoxve:index/fileLegacy:FileLegacy")}
    # A new file name: the new snippet is written beside the old one, then the VM is replaced.
    assert files_before.keys() == files_after.keys() and not set(files_before.values()) & set(files_after.values())
    for vm in after.of_type("proxmoxve:index/vmLegacy:VmLegacy"):
        assert vm.replace_on_changes == ["initialization.userDataFileId"] and vm.delete_before_replace
    # The same user-data keeps the same file name: nothing is replaced when nothing changed.
    again = run_offline(shape("gcp", "proxmox"))
    assert {r.name: r.inputs["sourceRaw"]["fileName"] for r in again.of_type("proxmoxve:index/fileLegacy:FileLegacy")} == files_before
