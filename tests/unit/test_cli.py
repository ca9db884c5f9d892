"""``resinfra plan`` and ``resinfra render`` on the dev stack."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from resinfra import cli
from resinfra.offline import OFFLINE_SECRET_PLACEHOLDER
from tests.conftest import DevStackCommands


def test_plan_text_shows_networks_firewalls_workers_and_gateways(dev_stack: DevStackCommands) -> None:
    out = dev_stack.plan.out
    for expected in (
        "stack dev",
        "10.10.16.0/20",
        "gcp:compute/network:Network",
        "azure-native:network:NetworkSecurityGroup",
        "hcloud:index/firewall:Firewall",
        "proxmoxve:firewall/rulesLegacy:RulesLegacy",
        "ri-dev-azure-worker-2",
        "ri-dev-proxmox-gw",
        "gcp-ha-vpn",
        "azure-vnet-gateway",
        "strongswan",
    ):
        assert expected in out, expected


def test_plan_json_carries_the_same_data(dev_stack: DevStackCommands) -> None:
    report = dev_stack.plan_json
    assert [s["name"] for s in report["sites"]] == ["gcp", "azure", "hetzner", "proxmox"]
    assert len(report["machines"]) == 11
    assert {c["type"] for c in report["components"]} == {
        "resinfra:sites:GcpSite",
        "resinfra:sites:AzureSite",
        "resinfra:sites:HetznerSite",
        "resinfra:sites:ProxmoxSite",
        "resinfra:mesh:IpsecMesh",
        "resinfra:tooling:ToolingVm",
    }
    assert report["resourceCount"] == sum(c["resourceCount"] for c in report["components"])
    assert sum(report["countsByType"].values()) == report["resourceCount"]


def test_plan_reads_any_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (cli.project_dir() / "Pulumi.dev.yaml").read_text()
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(source.replace("ri-dev", "ri-stg") + "  hcloud:token:\n    secure: v1:abcdef\n")
    assert cli.main(["plan", "--config-file", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stack"] == "staging"
    assert all(m["name"].startswith("ri-stg-") for m in report["machines"])


def test_plan_reads_secrets_set_by_path(tmp_path: Path) -> None:
    """`pulumi config set --secret --path 'resinfra:healerEnvironment.HCLOUD_TOKEN'` (what the config's own Fix says) nests the
    encrypted value; plan gives the nested leaf a placeholder and counts the key secret."""
    source = (cli.project_dir() / "Pulumi.dev.yaml").read_text()
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(source + "  resinfra:healerEnvironment:\n    HCLOUD_TOKEN:\n      secure: v1:abcdef\n")
    values, secret_keys = cli.read_stack_config(path)
    assert values["resinfra:healerEnvironment"] == {"HCLOUD_TOKEN": OFFLINE_SECRET_PLACEHOLDER}
    assert "resinfra:healerEnvironment" in secret_keys
    assert cli.main(["plan", "--config-file", str(path), "--json"]) == 0


def test_render_writes_one_file_per_machine_and_purpose(dev_stack: DevStackCommands) -> None:
    tmp_path, _ = dev_stack.render
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert "ri-dev-hetzner-gw/user-data.yaml" in files
    assert "ri-dev-gcp-worker-1/user-data.yaml" in files
    assert len([f for f in files if f.endswith("user-data.yaml")]) == 11
    mode = stat.S_IMODE((tmp_path / "ri-dev-gcp-worker-1/user-data.yaml").stat().st_mode)
    assert mode == 0o644
    assert (tmp_path / "ri-dev-gcp-worker-1/user-data.yaml").read_text().startswith("#cloud-config")


def test_plan_shows_the_tunnel_matrix(dev_stack: DevStackCommands) -> None:
    out = dev_stack.plan.out
    assert "Tunnels: 6 links, 6 tunnels" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.split("Tunnels:", 1)[1].split("\n\n", 1)[0].splitlines()[2:]}
    assert rows == {
        "gcp-azure": ["azure-gcp-ha-vpn-bgp", "bgp"],
        "gcp-hetzner": ["gcp-classic-vpn-strongswan", "static"],
        "gcp-proxmox": ["gcp-classic-vpn-strongswan", "static"],
        "azure-hetzner": ["azure-strongswan", "static"],
        "azure-proxmox": ["azure-strongswan", "static"],
        "hetzner-proxmox": ["strongswan-strongswan", "static"],
    }
    assert out.count("IKEv2 aes256gcm16-prfsha384-ecp384 / ESP aes256gcm16-ecp384 (PFS)") == 6


def test_render_writes_gateway_configs_and_managed_ends_owner_only(dev_stack: DevStackCommands) -> None:
    tmp_path, _ = dev_stack.render
    secret = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and stat.S_IMODE(p.stat().st_mode) == 0o600)
    # The tooling VM's secret files are checked in tests/unit/test_tooling.py.
    secret = [f for f in secret if not f.startswith("ri-dev-hetzner-tooling/")]
    assert secret == [
        "ri-dev-azure-vpn-gw/azure-hetzner.json",
        "ri-dev-azure-vpn-gw/azure-proxmox.json",
        "ri-dev-azure-vpn-gw/gcp-azure.json",
        "ri-dev-gcp-vpn-gw/gcp-azure.json",
        "ri-dev-gcp-vpn-gw/gcp-hetzner.json",
        "ri-dev-gcp-vpn-gw/gcp-proxmox.json",
        "ri-dev-hetzner-gw/swanctl.conf",
        "ri-dev-proxmox-gw/swanctl.conf",
    ]
    assert json.loads((tmp_path / "ri-dev-gcp-vpn-gw/gcp-azure.json").read_text())["tunnels"][0]["bgp"]["peerAsn"] == 65515


def test_render_never_lets_a_secret_file_be_readable_by_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every moment a rendered file holds bytes, it already has its final mode (no write-then-chmod window)."""
    import os

    seen: list[tuple[str, int, int]] = []
    real_write_text, real_os_write = Path.write_text, os.write

    def write_text(self: Path, data: str, *args: object, **kwargs: object) -> int:
        written = real_write_text(self, data, *args, **kwargs)  # type: ignore[arg-type]
        seen.append((str(self), stat.S_IMODE(self.stat().st_mode), self.stat().st_size))
        return written

    def os_write(fd: int, data: bytes) -> int:
        written = real_os_write(fd, data)
        info = os.fstat(fd)
        seen.append((str(Path(f"/proc/self/fd/{fd}").readlink()), stat.S_IMODE(info.st_mode), info.st_size))
        return written

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(os, "write", os_write)
    old_umask = os.umask(0o022)
    try:
        assert cli.main(["render", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old_umask)
    final = {str(p): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    secret = {path for path, mode in final.items() if mode == 0o600}
    assert secret, "render writes secret files"

    def final_name(path: str) -> str:
        """The file a write is for (a temporary file beside it is named after it)."""
        return str(Path(path).with_name(re.sub(r"^\.(.+)\.\d+\.tmp$", r"\1", Path(path).name)))

    checked = [(final_name(path), mode, size) for path, mode, size in seen if size and final_name(path) in secret]
    assert checked, "the writes of secret files were seen"
    early = [(path, oct(mode)) for path, mode, _ in checked if mode & 0o077]
    assert early == [], f"secret bytes readable by others before the chmod: {early[:3]}"


def test_a_secret_in_clear_in_the_stack_file_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from tests.conftest import ROOT

    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    stack["config"]["resinfra:notificationWebhookUrl"] = "https://hooks.example.net/clear-text-sentinel"
    stack["config"]["hcloud:token"] = "clear-token-sentinel"
    stack["config"]["proxmoxve:password"] = {"secure": "v1:encrypted"}
    path = tmp_path / "Pulumi.clear.yaml"
    path.write_text(yaml.safe_dump(stack))
    assert cli.main(["plan", "--config-file", str(path)]) == 0
    err = capsys.readouterr().err
    assert "hcloud:token: a secret is written in clear" in err and "pulumi config set --secret hcloud:token" in err
    assert "resinfra:notificationWebhookUrl: a secret is written in clear" in err
    assert "proxmoxve:password" not in err, "an encrypted value is fine"
    assert "sentinel" not in err, "the value is never shown"


@pytest.fixture
def plan_text(dev_stack: DevStackCommands) -> str:
    """``resinfra plan``'s text on the dev stack."""
    return dev_stack.plan.out


def section(text: str, title: str) -> list[str]:
    """The lines of one block of the plan's text, from its title to the next empty line."""
    lines = text.split(f"\n{title}", 1)[1].split("\n\n", 1)[0].splitlines()
    return lines[1:]


def test_the_address_plan_holds_every_tunnel_endpoint(plan_text: str, dev_stack: DevStackCommands) -> None:
    """A GCP site's Classic VPN address (its end of every tunnel to a strongSwan site) is in the address plan, not only in the tunnels."""
    report = dev_stack.plan_json
    endpoints = {(end["site"], ip) for t in report["tunnels"] for end in t["ends"] for ip in end["publicIps"]}
    rows = {line.split()[0]: line for line in section(plan_text, "Address plan")[1:]}
    missing = [(site, ip) for site, ip in endpoints if ip not in rows[site]]
    assert not missing, missing
    assert "Classic VPN" in rows["gcp"]


def test_the_plan_prints_each_count_once(plan_text: str) -> None:
    """Resources by component, without a second table of totals repeating the same counts (``--json`` keeps ``countsByType``)."""
    assert "Totals by type" not in plan_text
    lines = section(plan_text, "Resources:")
    assert len(lines) < 60, "the dev stack's resources fit a screen"


def test_the_images_table_says_the_mode_once(plan_text: str) -> None:
    header, *rows = section(plan_text, "Images")
    assert header.split() == ["site", "role", "mode", "image", "user-data", "provisioning"]
    assert all(row.split()[2] == "stock" and row.split()[3] != "stock" for row in rows), rows


def test_the_images_table_names_how_a_built_image_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from tests.conftest import ROOT

    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    gcp = next(s for s in stack["config"]["resinfra:sites"] if s["provider"] == "gcp")
    gcp["images"] = {"mode": "packer"}
    path = tmp_path / "Pulumi.images.yaml"
    path.write_text(yaml.safe_dump(stack))
    assert cli.main(["plan", "--config-file", str(path)]) == 0
    rows = section(capsys.readouterr().out, "Images")[1:]
    assert [row.split()[2:4] for row in rows if row.split()[0] == "gcp"] == [["packer", "(gce-image-family)"]]


def test_render_again_removes_what_it_no_longer_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second render into the same directory leaves no stale machine beside the new ones, and says what it removed."""
    import yaml

    from tests.conftest import ROOT

    out = tmp_path / "out"
    assert cli.main(["render", "--out", str(out)]) == 0
    assert (out / "ri-dev-gcp-worker-2" / "user-data.yaml").is_file()
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    for site in stack["config"]["resinfra:sites"]:
        site["workers"] = 1
    smaller = tmp_path / "Pulumi.dev.yaml"
    smaller.write_text(yaml.safe_dump(stack))
    capsys.readouterr()
    assert cli.main(["render", "--config-file", str(smaller), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    machines = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert "ri-dev-gcp-worker-2" not in machines and "ri-dev-gcp-worker-1" in machines
    assert "removed 4 files no longer rendered" in printed and "ri-dev-gcp-worker-2/user-data.yaml" in printed, printed


def test_render_refuses_a_directory_holding_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["render", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path}" in err and "Fix:" in err and "notes.txt" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"], "nothing written, nothing removed"


THE_PROGRAMS_IMPORTS = ("pulumi", "pulumi_gcp", "pulumi_azure_native", "pulumi_hcloud", "pulumi_proxmoxve", "pydantic", "tornado", "jinja2")
"""What running the program or the healer service loads: about a CPU second per process on a small machine."""


def modules_loaded_by(code: str, top_level: bool = True) -> set[str]:
    """The top-level packages (or every module) a fresh interpreter has loaded after running ``code``."""
    listing = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code + listing], capture_output=True, text=True, check=True, cwd=Path(cli.__file__).parent.parent)
    return {name.split(".")[0] if top_level else name for name in json.loads(done.stdout.splitlines()[-1])}


def test_every_command_is_parsed_without_loading_the_program() -> None:
    # `resinfra lab partition`, `lab heal`, `lab kill` and the healer's lab action run as processes of their own, many
    # times in a lab session: they must not pay for `resinfra plan`'s imports to read their command line.
    loaded = modules_loaded_by("from resinfra import cli\ncli.build_parser().parse_args(['lab', 'partition', 'gcp'])")
    heavy = sorted(loaded & set(THE_PROGRAMS_IMPORTS))
    assert heavy == [], f"parsing a lab command loaded {heavy}"


def test_the_labs_outage_commands_load_none_of_the_program() -> None:
    # `lab kill`, `partition`, `heal`, `kill-instance`, `revive-instance` and `status` only change or read a running
    # lab: neither the Pulumi SDKs nor the healer service (its state file is read with pydantic, its texts rendered).
    loaded = modules_loaded_by("import resinfra.lab.actions, resinfra.lab.status")
    heavy = sorted(loaded & {"pulumi", "pulumi_gcp", "pulumi_azure_native", "pulumi_hcloud", "pulumi_proxmoxve", "tornado"})
    assert heavy == [], f"the lab's actions loaded {heavy}"


def test_the_labs_quickest_commands_load_neither_the_config_nor_the_renderers() -> None:
    # `lab partition`, `heal`, `kill` read the lab's state file and act: 0.3 CPU-s each, where the config's models and
    # the monitoring renderers (only to name a binary and a role) made it 0.5. The partitions test runs forty of them.
    loaded = modules_loaded_by("import resinfra.lab.actions, resinfra.lab.state", top_level=False)
    heavy = sorted(m for m in loaded if m.startswith(("resinfra.config", "resinfra.render", "resinfra.addressing", "resinfra.monitoring_local")))
    assert heavy == [], f"the lab's actions loaded {heavy}"
