"""One provisioning source per role: the Packer path and the cloud-init path install exactly the same.

Each path is followed to what it really executes (the Packer templates' provisioners, the
rendered user-data's files and ``runcmd``) and that is run in list mode
(``provision.sh --list``), which prints every package, apt source, service state, file and
step instead of applying it. Neither side has a list of its own to compare.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from resinfra import images
from resinfra.addressing import Role
from resinfra.offline import OfflineRun
from tests.images.test_templates import PROVIDER_ROLES, TEMPLATES, packer, var_args

LIST_TOOLS = ("dirname", "cat", "sha256sum", "cut")
"""All a role's listing may run: anything else a role script calls directly (apt-get,
systemctl, ...) is missing from PATH and fails the listing, so every change goes through lib.sh."""
PACKER_UPLOAD = "/tmp/provision"
PACKER_COMMANDS_ALLOWED = {
    "cloud-init status --wait >/dev/null || test $? -eq 2",
    "bash /tmp/provision/finalize-image.sh",
    "bash /tmp/provision/finalize-image.sh --azure",
}
"""What a template may run besides the role's provisioning: waiting for the build VM's boot, and
cleaning the image (finalize-image.sh installs nothing)."""
INSTALLERS = re.compile(r"\b(apt|apt-get|aptitude|dpkg|snap|pip3?|curl|wget)\b")


def run_listing(provision_dir: Path, role: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``provision.sh --list <role>`` in ``provision_dir`` with nothing but :data:`LIST_TOOLS` on PATH."""
    bin_dir = tmp_path / "list-bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in LIST_TOOLS:
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to(subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True, check=True).stdout.strip())
    return subprocess.run(
        ["/bin/bash", str(provision_dir / "provision.sh"), "--list", role], env={"PATH": str(bin_dir)}, capture_output=True, text=True, check=False
    )


def listing(provision_dir: Path, role: str, tmp_path: Path) -> list[str]:
    """What ``provision.sh <role>`` in ``provision_dir`` would do, line by line."""
    result = run_listing(provision_dir, role, tmp_path)
    assert result.returncode == 0, f"{provision_dir} {role}: {result.stderr}"
    return result.stdout.splitlines()


def unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def packer_provisioning(provider: str) -> tuple[list[str], Path, list[str]]:
    """(roles the template builds, the directory its file provisioner uploads, every shell command it runs)."""
    template = TEMPLATES[provider]
    document = hcl2.load(template.open())
    (build,) = document["build"]
    roles = [unquote(next(iter(source.values()))["name"]) for source in build["source"]]
    uploads, commands = [], []
    for provisioner in build["provisioner"]:
        ((kind, body),) = provisioner.items()
        kind = unquote(kind)
        if kind == "file":
            assert unquote(body["destination"]) == "/tmp/", "uploaded as /tmp/provision"
            uploads.append(unquote(body["source"]))
        else:
            assert kind == "shell", f"{provider}: only file and shell provisioners ({kind})"
            assert set(body) - {"inline", "execute_command", "__is_block__", "__inline_comments__", "__comments__"} == set(), f"{provider}: {sorted(body)}"
            commands += unquote(body["inline"])
    assert uploads == ["${local.provision_dir}"], f"{provider}: one upload, the provisioning directory"
    console = packer("console", *var_args(provider), str(template), stdin="local.provision_dir\n")
    assert console.returncode == 0, console.stderr
    return roles, Path(console.stdout.strip()).resolve(), commands


@pytest.mark.parametrize("provider", list(TEMPLATES))
def test_packer_builds_each_role_from_its_provisioning_source(provider: str, tmp_path: Path) -> None:
    roles, uploaded, commands = packer_provisioning(provider)
    assert tuple(roles) == PROVIDER_ROLES[provider]
    assert uploaded == images.PROVISION_DIR
    role_commands = [c for c in commands if c not in PACKER_COMMANDS_ALLOWED]
    assert role_commands == [f"bash {PACKER_UPLOAD}/provision.sh ${{source.name}}"], (
        f"{provider}: nothing but the provisioning source installs: {role_commands}"
    )
    for role in roles:
        assert listing(uploaded, role, tmp_path) == listing(images.PROVISION_DIR, role, tmp_path)


def boot_provisioning(user_data: str, tmp_path: Path, machine: str) -> tuple[str, Path, dict[str, Any]]:
    """(the role the user-data provisions, the directory its files land in, the document)."""
    document = yaml.safe_load(user_data)
    root = tmp_path / machine
    for f in document["write_files"]:
        if f["path"].startswith(images.BOOT_DIR + "/"):
            target = root / Path(f["path"]).name
            root.mkdir(exist_ok=True)
            target.write_text(f["content"])
    command = document["runcmd"][0]
    assert command[:2] == ["bash", f"{images.BOOT_DIR}/provision.sh"], f"{machine}: the provisioning runs first"
    return command[2], root, document


def test_cloud_init_runs_the_same_source_on_every_stock_machine(offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    run = offline_runs["all-four"]
    roles = {m["name"]: m["role"] for m in run.outputs["inventory"]}
    seen = set()
    for f in (f for f in run.files if f.purpose == "cloud-init"):
        role, root, document = boot_provisioning(f.content, tmp_path, f.machine)
        assert role == roles[f.machine]
        assert listing(root, role, tmp_path) == listing(images.PROVISION_DIR, role, tmp_path)
        assert_installs_nothing_else(document, f.machine)
        seen.add(role)
    assert seen == {r.value for r in Role}


def assert_installs_nothing_else(document: dict[str, Any], machine: str) -> None:
    """Beyond the provisioning: no packages, no apt sources, no installer in runcmd."""
    assert "packages" not in document and "apt" not in document, f"{machine}: packages belong in images/provision/<role>.sh"
    for command in document["runcmd"]:
        if command[:2] != ["bash", f"{images.BOOT_DIR}/provision.sh"]:
            assert not INSTALLERS.search(" ".join(command)), f"{machine}: {command} installs outside the provisioning source"


def test_both_paths_install_the_same_packages_and_services(offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    """The whole property in one place: for every role, what a Packer template runs equals what a stock user-data runs."""
    run = offline_runs["all-four"]
    cloud_init = {}
    for f in (f for f in run.files if f.purpose == "cloud-init"):
        role, root, _ = boot_provisioning(f.content, tmp_path, f.machine)
        cloud_init.setdefault(role, listing(root, role, tmp_path))
    packer_side: dict[str, list[str]] = {}
    for provider in TEMPLATES:
        roles, uploaded, _ = packer_provisioning(provider)
        for role in roles:
            items = listing(uploaded, role, tmp_path)
            assert packer_side.setdefault(role, items) == items, f"{provider} builds {role} like the other templates"
    assert packer_side == cloud_init
    packages = {role: {line.split(" ", 1)[1] for line in items if line.startswith("package ")} for role, items in cloud_init.items()}
    services = {role: {line for line in items if line.startswith("service-")} for role, items in cloud_init.items()}
    # The listing is meaningful: what each role is known to need is in it.
    assert all("prometheus-node-exporter" in p for p in packages.values())
    assert {"strongswan-swanctl", "charon-systemd"} <= packages["gateway"]
    assert {"prometheus", "prometheus-alertmanager", "grafana"} <= packages["tooling"]
    assert "service-disabled prometheus-node-exporter" in services["worker"]


def test_a_role_script_that_bypasses_lib_sh_fails_the_listing(tmp_path: Path) -> None:
    """The listing cannot be fooled by a package installed directly: that command is not there to run."""
    copy = tmp_path / "provision"
    copy.mkdir()
    for f in images.PROVISION_DIR.iterdir():
        (copy / f.name).write_text(f.read_text())
    assert listing(copy, "worker", tmp_path) == listing(images.PROVISION_DIR, "worker", tmp_path)
    (copy / "worker.sh").write_text((copy / "worker.sh").read_text() + "apt-get install -y htop\n")
    result = run_listing(copy, "worker", tmp_path)
    assert result.returncode != 0 and "apt-get: command not found" in result.stderr
