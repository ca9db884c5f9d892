"""Image modes under mocks: packer mode boots the found images with the machine's own user-data, stock mode Ubuntu with all of it."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from resinfra import cli, images
from resinfra.offline import DeclaredResource, OfflineRun, run_offline
from resinfra.sites.proxmox import user_data_file_name
from tests.conftest import dev_config
from tests.render.test_cloud_init import schema_check_many

PROVISION_COMMAND = "/usr/local/lib/resinfra/provision/provision.sh"
PACKER_IMAGES: dict[str, dict[str, Any]] = {
    "gcp": {"mode": "packer"},
    "azure": {"mode": "packer", "resourceGroup": "ri-images"},
    "hetzner": {"mode": "packer"},
    "proxmox": {"mode": "packer", "templates": {"worker": 9001, "gateway": 9002, "tooling": 9003}},
}


def with_images(per_provider: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = copy.deepcopy(dev_config())
    for site in values["resinfra:sites"]:
        if site["provider"] in per_provider:
            site["images"] = per_provider[site["provider"]]
    return values


@pytest.fixture(scope="module")
def packer_run() -> OfflineRun:
    return run_offline(with_images(PACKER_IMAGES))


def user_data(run: OfflineRun) -> dict[str, str]:
    return {f.machine: f.content for f in run.files if f.purpose == "cloud-init"}


def boot_image(run: OfflineRun, vm: DeclaredResource) -> Any:
    """The image input of any of the four VM types."""
    inputs = vm.inputs
    if vm.type == "hcloud:index/server:Server":
        return inputs["image"]
    if vm.type == "gcp:compute/instance:Instance":
        return inputs["bootDisk"]["initializeParams"]["image"]
    if vm.type == "azure-native:compute:VirtualMachine":
        return inputs["storageProfile"]["imageReference"]
    return int(inputs["clone"]["vmId"])


VM_TYPES = ("hcloud:index/server:Server", "gcp:compute/instance:Instance", "azure-native:compute:VirtualMachine", "proxmoxve:index/vmLegacy:VmLegacy")


def vms(run: OfflineRun) -> dict[str, DeclaredResource]:
    return {r.name: r for r in run.resources if r.type in VM_TYPES}


def roles(run: OfflineRun) -> dict[str, str]:
    return {m["name"]: m["role"] for m in run.outputs["inventory"]}


def test_stock_mode_boots_ubuntu_with_the_full_user_data(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    role_of = roles(run)
    expected = {
        "hcloud:index/server:Server": "ubuntu-24.04",
        "gcp:compute/instance:Instance": "ubuntu-os-cloud/ubuntu-2404-lts-amd64",
        "azure-native:compute:VirtualMachine": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
        "proxmoxve:index/vmLegacy:VmLegacy": 9000,
    }
    found = vms(run)
    assert {vm.type for vm in found.values()} == set(VM_TYPES)
    for name, vm in found.items():
        assert boot_image(run, vm) == expected[vm.type], name
        document = yaml.safe_load(user_data(run)[name])
        assert document["runcmd"][0] == ["bash", PROVISION_COMMAND, role_of[name]]
    assert not run.lookups, "stock images need no lookup"


def test_packer_mode_boots_the_found_images(packer_run: OfflineRun) -> None:
    run = packer_run
    role_of = roles(run)
    lookups = {(lookup.token, tuple(sorted(lookup.args.items()))): lookup for lookup in run.lookups}
    hcloud_found = {
        lookup.args["withSelector"]: str(lookup.result["id"])
        for lookup in run.lookups
        if lookup.token == "hcloud:index/getImage:getImage" and lookup.args["mostRecent"]
    }
    azure_found = {lookup.args["imageName"]: lookup.result["id"] for lookup in run.lookups if lookup.token == "azure-native:compute:getImage"}
    assert len(lookups) == len(run.lookups) == 3 + 1, "one lookup per role and site (hcloud: worker, gateway, tooling; Azure: worker)"
    for name, vm in vms(run).items():
        role = role_of[name]
        image = boot_image(run, vm)
        if vm.type == "hcloud:index/server:Server":
            assert image == hcloud_found[f"resinfra-image=resinfra,resinfra-role={role}"], name
        elif vm.type == "gcp:compute/instance:Instance":
            assert image == f"projects/resinfra-dev/global/images/family/resinfra-{role}"
        elif vm.type == "azure-native:compute:VirtualMachine":
            assert image == {"id": azure_found[f"resinfra-{role}"]}
            assert image["id"].endswith(f"/resourceGroups/ri-images/providers/Microsoft.Compute/images/resinfra-{role}")
        else:
            assert image == {"worker": 9001, "gateway": 9002}[role]
    # Each lookup goes through the site's own explicit provider.
    assert all(lookup.provider.split("::")[-1].startswith(("ri-dev-hetzner-provider", "ri-dev-azure-provider")) for lookup in run.lookups)


def test_packer_mode_user_data_is_the_machine_only(packer_run: OfflineRun, offline_runs: dict[str, OfflineRun]) -> None:
    stock = user_data(offline_runs["all-four"])
    for name, text in user_data(packer_run).items():
        document = yaml.safe_load(text)
        assert not any(PROVISION_COMMAND in " ".join(c) for c in document["runcmd"]), name
        assert not any(f["path"].startswith(images.BOOT_DIR) for f in document["write_files"]), name
        assert "packages" not in document and "apt" not in document
        # What is particular to the machine is still there.
        assert document["hostname"] == name and document["users"][0]["ssh_authorized_keys"]
        assert any(f["path"] == "/etc/default/prometheus-node-exporter" for f in document["write_files"])
        assert len(text) < len(stock[name]) / 2, f"{name}: {len(text)} vs {len(stock[name])} bytes"
        # Removing the provisioning from the stock user-data gives the packer one: nothing else differs.
        stock_document = yaml.safe_load(stock[name])
        stock_document["runcmd"] = stock_document["runcmd"][1:]
        stock_document["write_files"] = [f for f in stock_document["write_files"] if not f["path"].startswith(images.BOOT_DIR)]
        assert stock_document == document, name


def test_the_vms_boot_what_was_rendered(packer_run: OfflineRun) -> None:
    rendered = user_data(packer_run)
    for name, vm in vms(packer_run).items():
        if vm.type == "hcloud:index/server:Server":
            assert vm.inputs["userData"] == rendered[name]
        elif vm.type == "gcp:compute/instance:Instance":
            assert vm.inputs["metadata"]["user-data"] == rendered[name]
        elif vm.type == "azure-native:compute:VirtualMachine":
            assert base64.b64decode(vm.inputs["osProfile"]["customData"]).decode() == rendered[name]
    snippets = {r.inputs["sourceRaw"]["fileName"]: r.inputs["sourceRaw"]["data"] for r in packer_run.of_type("proxmoxve:index/fileLegacy:FileLegacy")}
    assert snippets[user_data_file_name("ri-dev-proxmox-worker-1", rendered["ri-dev-proxmox-worker-1"])] == rendered["ri-dev-proxmox-worker-1"]


def test_user_data_of_both_modes_passes_cloud_init_schema(packer_run: OfflineRun, offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    checked = set()
    paths = []
    for mode, run in (("packer", packer_run), ("stock", offline_runs["all-four"])):
        role_of = roles(run)
        for name, text in user_data(run).items():
            paths.append(tmp_path / f"{mode}-{name}.yaml")
            paths[-1].write_text(text)
            checked.add((mode, role_of[name]))
    problems = {path.stem: problem for path, problem in schema_check_many(paths).items() if problem}
    assert problems == {}
    assert checked == {(mode, role) for mode in ("packer", "stock") for role in ("worker", "gateway", "tooling")}


def test_sites_mix_modes_and_overrides() -> None:
    run = run_offline(
        with_images(
            {
                "hetzner": {"mode": "packer", "selector": "resinfra-build=20261126120000", "overrides": {"gateway": "ubuntu-24.04"}},
                "azure": {"mode": "packer", "resourceGroup": "ri-images", "gallery": "resinfra_images"},
                "gcp": {"overrides": {"worker": "projects/my-images/global/images/hardened-2404"}},
            }
        )
    )
    found = vms(run)
    documents = {name: yaml.safe_load(text) for name, text in user_data(run).items()}
    hcloud = [lookup for lookup in run.lookups if lookup.token == "hcloud:index/getImage:getImage"]
    assert sorted(lookup.args["withSelector"] for lookup in hcloud) == [
        "resinfra-image=resinfra,resinfra-role=tooling,resinfra-build=20261126120000",
        "resinfra-image=resinfra,resinfra-role=worker,resinfra-build=20261126120000",
    ]
    # An override in packer mode: that image, and the machine-only user-data.
    assert boot_image(run, found["ri-dev-hetzner-gw"]) == "ubuntu-24.04"
    assert documents["ri-dev-hetzner-gw"]["runcmd"][0] != ["bash", PROVISION_COMMAND, "gateway"]
    # A gallery: the image definition (its latest version when the VM is created).
    gallery = next(lookup for lookup in run.lookups if lookup.token == "azure-native:compute:getGalleryImage")
    assert gallery.args == {"resourceGroupName": "ri-images", "galleryName": "resinfra_images", "galleryImageName": "resinfra-worker"}
    assert boot_image(run, found["ri-dev-azure-worker-1"]) == {"id": gallery.result["id"]}
    # An override in stock mode: that image, and the full user-data.
    assert boot_image(run, found["ri-dev-gcp-worker-1"]) == "projects/my-images/global/images/hardened-2404"
    assert documents["ri-dev-gcp-worker-1"]["runcmd"][0] == ["bash", PROVISION_COMMAND, "worker"]
    # Proxmox stays stock: templateVmId.
    assert boot_image(run, found["ri-dev-proxmox-worker-1"]) == 9000


def test_plan_shows_mode_and_image_per_site_and_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Pulumi.images.yaml"
    path.write_text(yaml.safe_dump({"config": with_images({"hetzner": PACKER_IMAGES["hetzner"]})}))
    assert cli.main(["plan", "--config-file", str(path), "--json"]) == 0
    report = yaml.safe_load(capsys.readouterr().out)
    rows = {(row["site"], row["role"]): row for row in report["images"]}
    assert set(rows) == {
        ("gcp", "worker"),
        ("azure", "worker"),
        ("hetzner", "worker"),
        ("hetzner", "gateway"),
        ("hetzner", "tooling"),
        ("proxmox", "worker"),
        ("proxmox", "gateway"),
    }
    assert rows["hetzner", "gateway"] | {"provisioning": ""} == {
        "site": "hetzner",
        "role": "gateway",
        "mode": "packer",
        "source": "hcloud-label-selector",
        "image": "resinfra-image=resinfra,resinfra-role=gateway",
        "userData": "machine only",
        "provisioning": "",
    }
    assert rows["proxmox", "worker"]["mode"] == "stock" and rows["proxmox", "worker"]["image"] == "9000"
    assert rows["gcp", "worker"]["provisioning"] == images.source_digest(images.Role.WORKER)
    assert cli.main(["plan", "--config-file", str(path)]) == 0
    text = capsys.readouterr().out
    assert "hetzner  gateway  packer (hcloud-label-selector)  resinfra-image=resinfra,resinfra-role=gateway  machine only" in text
