"""Configuration pushes: the script is safe shell, and the command re-runs exactly when the text changes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from resinfra.addressing import Role
from resinfra.config import Provider
from resinfra.offline import CloudMocks, RecordingMonitor
from resinfra.remote import PUSH_COMMAND, PushVia, SshAccess, push_files, script_hash
from resinfra.render.push_script import FileToPush, render_push_script
from resinfra.sites.base import Node
from tests.conftest import require_tool

TRICKY = "literal $HOME `id` $(id) \\n and 'quotes' \"too\"\nsecond line\n"


def test_push_script_passes_shellcheck(tmp_path: Path) -> None:
    script = tmp_path / "push.sh"
    script.write_text(render_push_script([FileToPush("/etc/swanctl/conf.d/mesh.conf", TRICKY, "0600")], ["swanctl --load-all"]))
    result = subprocess.run([require_tool("shellcheck"), "-s", "bash", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_push_script_installs_files_verbatim_with_their_modes(tmp_path: Path) -> None:
    owner = f"{os.getuid()}:{os.getgid()}"
    target = tmp_path / "etc" / "app" / "secret.conf"
    other = tmp_path / "etc" / "other.conf"
    script = render_push_script(
        [FileToPush(str(target), TRICKY, "0600", owner), FileToPush(str(other), "no newline at end", "0644", owner)],
        [f"touch {tmp_path}/reloaded"],
    )
    subprocess.run(["bash", "-s"], input=script, text=True, check=True)
    assert target.read_text() == TRICKY, "contents are not expanded by the shell"
    assert other.read_text() == "no newline at end\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "reloaded").exists()
    assert not list(tmp_path.rglob("*.resinfra-new"))


def push_under_mocks(content: pulumi.Input[str]) -> dict[str, Any]:
    monitor = RecordingMonitor(CloudMocks())
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(monitor.mocks, project="resinfra", stack="dev", preview=False, monitor=monitor)

    @pulumi.runtime.test
    def program() -> Any:
        vm = hcloud.Server("ri-dev-hetzner-gw", server_type="cx23")
        node = Node("ri-dev-hetzner-gw", "hetzner", Provider.HETZNER, Role.GATEWAY, "10.10.48.4", vm.ipv4_address, vm)
        access = SshAccess(user="resinfra", private_key=pulumi.Output.secret("key"), via=PushVia.PUBLIC)
        files = pulumi.Output.from_input(content).apply(lambda text: [FileToPush("/etc/swanctl/conf.d/mesh.conf", text, "0600")])
        command = push_files("ri-dev-hetzner-gw-swanctl", node, files, ["swanctl --load-all"], access, pulumi.ResourceOptions())
        return command.urn

    program()
    (declared,) = [r for r in monitor.declared.values() if r.type == "command:remote:Command"]
    return {"inputs": declared.inputs, "secret": declared.secret_inputs, "deps": declared.dependencies}


def test_push_command_reruns_when_and_only_when_the_text_changes() -> None:
    first = push_under_mocks("psk = one\n")
    same = push_under_mocks("psk = one\n")
    changed = push_under_mocks("psk = two\n")
    assert first["inputs"]["triggers"] == same["inputs"]["triggers"]
    assert first["inputs"]["triggers"][0] != changed["inputs"]["triggers"][0]
    assert first["inputs"]["triggers"][0] == script_hash(first["inputs"]["stdin"])
    assert first["inputs"]["create"] == PUSH_COMMAND, "the command line never carries file contents"
    assert first["inputs"]["connection"]["host"], "connects to the node's public address"
    assert any("ri-dev-hetzner-gw" in d for d in first["deps"]), "a replaced VM is pushed again"


def test_secret_contents_stay_secret_in_the_push() -> None:
    pushed = push_under_mocks(pulumi.Output.secret("psk = top-secret\n"))
    assert {"stdin", "triggers", "connection"} <= pushed["secret"]
