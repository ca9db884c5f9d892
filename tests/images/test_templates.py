"""The Packer templates and provisioning scripts under images/, checked by their own tools offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from resinfra import images
from resinfra.addressing import Role
from tests.conftest import ROOT, require_tool

IMAGES = ROOT / "images"
PROVIDERS = ("hcloud", "gcp", "azure", "proxmox")
TEMPLATES = {provider: IMAGES / provider / f"{provider}.pkr.hcl" for provider in PROVIDERS}
PROVIDER_ROLES = {
    "hcloud": ("worker", "gateway", "tooling"),
    "gcp": ("worker", "tooling"),
    "azure": ("worker", "tooling"),
    "proxmox": ("worker", "gateway", "tooling"),
}
"""Roles each template builds: no gateway image where the cloud runs the VPN gateway."""
REQUIRED_VARS = {
    # What each builder needs to validate offline (any non-empty credential passes).
    "hcloud": {"hcloud_token": "validate-only-token"},
    "gcp": {"project_id": "resinfra-dev"},
    "azure": {"subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "ri-images"},
    "proxmox": {
        "proxmox_url": "https://pve.invalid:8006/api2/json",
        "username": "packer@pve",
        "password": "validate-only-password",
        "node": "pve1",
        "base_template": "ubuntu-2404-cloudinit",
    },
}
SCRIPTS = sorted((IMAGES / "provision").glob("*.sh"))


def packer(*args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("packer"), *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=False, timeout=120)


def var_args(provider: str, **extra: str) -> list[str]:
    return [arg for key, value in {**REQUIRED_VARS[provider], **extra}.items() for arg in ("-var", f"{key}={value}")]


def test_there_is_a_template_and_a_plugin_file_per_provider() -> None:
    for provider, template in TEMPLATES.items():
        assert template.is_file(), template
        plugins = (template.parent / "plugins.pkr.hcl").read_text()
        assert "required_plugins" in plugins and "required_version" in plugins
        # Packer 1.6.6 refuses a packer block: the build file must not have one.
        assert not re.search(r"^packer\s*\{", template.read_text(), re.M), f"{provider}: the packer block belongs in plugins.pkr.hcl"
        assert (template.parent / "example.pkrvars.hcl").is_file()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_template_validates_alone(provider: str) -> None:
    template = TEMPLATES[provider]
    result = packer("validate", *var_args(provider), str(template))
    assert result.returncode == 0, result.stdout + result.stderr
    example = packer("validate", *var_args(provider), f"-var-file={template.parent / 'example.pkrvars.hcl'}", str(template))
    assert example.returncode == 0, example.stdout + example.stderr


def test_azure_template_validates_with_a_gallery() -> None:
    result = packer("validate", *var_args("azure", gallery="resinfra_images"), str(TEMPLATES["azure"]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_validation_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    """A misspelled builder argument and a missing required variable both fail validation."""
    shutil.copytree(IMAGES / "provision", tmp_path / "provision")
    (tmp_path / "hcloud").mkdir()
    broken = tmp_path / "hcloud" / "hcloud.pkr.hcl"
    broken.write_text(TEMPLATES["hcloud"].read_text().replace("server_type  = var.server_type", "server_tpye  = var.server_type"))
    assert packer("validate", *var_args("hcloud"), str(broken)).returncode != 0
    assert packer("validate", str(TEMPLATES["gcp"])).returncode != 0, "project_id has no default"


@pytest.mark.parametrize("path", sorted(IMAGES.glob("*/*.pkr*.hcl")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_packer_files_are_formatted(path: Path) -> None:
    result = packer("fmt", "-check", str(path))
    assert result.returncode == 0, f"run: packer fmt {path.relative_to(ROOT)}\n{result.stdout}{result.stderr}"


def test_fmt_check_catches_unformatted_files(tmp_path: Path) -> None:
    unformatted = tmp_path / "x.pkr.hcl"
    unformatted.write_text('variable "a" {\ntype = string\n  default="x"\n}\n')
    assert packer("fmt", "-check", str(unformatted)).returncode == 3


def packer_digests(provider: str) -> dict[str, str]:
    """``local.provision_digest`` as Packer itself evaluates it from the template."""
    result = packer("console", *var_args(provider), str(TEMPLATES[provider]), stdin="local.provision_digest\n")
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(re.findall(r'"(\w+)" = "([0-9a-f]+)"', result.stdout))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_images_are_labelled_with_the_digest_the_program_computes(provider: str) -> None:
    digests = packer_digests(provider)
    assert set(digests) == set(PROVIDER_ROLES[provider])
    for role, digest in digests.items():
        assert digest == images.source_digest(Role(role))


def test_the_recorded_digest_is_the_same_formula() -> None:
    """provision.sh records ``cat provision.sh lib.sh <role>.sh | sha256sum`` cut to 16 digits: the program's digest."""
    text = (IMAGES / "provision" / "provision.sh").read_text()
    assert '"$(cat "$here/provision.sh" "$here/lib.sh" "$here/$role.sh" | sha256sum | cut -c1-16)"' in text
    assert images.DIGEST_LENGTH == 16
    for role in Role:
        files = [IMAGES / "provision" / name for name in ("provision.sh", "lib.sh", f"{role.value}.sh")]
        shell = subprocess.run(["sh", "-c", 'cat "$@" | sha256sum | cut -c1-16', "sh", *map(str, files)], capture_output=True, text=True, check=True)
        assert shell.stdout.strip() == images.source_digest(role)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_every_provisioning_script(script: Path) -> None:
    result = subprocess.run([require_tool("shellcheck"), "-x", script.name], cwd=script.parent, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_catches_a_broken_script(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/usr/bin/env bash\nfor f in $(ls /tmp); do rm $f; done\n")
    assert subprocess.run([require_tool("shellcheck"), str(broken)], capture_output=True, check=False).returncode != 0
