"""The real Pulumi CLI against the cloud emulators, in a temporary copy of the project.

Everything a user's shell would have: ``.engine/bin`` first on ``PATH`` (the CLI, the
language host, the emulators), a ``file://`` backend and a passphrase in a temporary
directory, and the project as a fresh clone holds it (the engine's uv toolchain makes the
copy's own ``.venv`` on the first run, as it does for a user).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from resinfra import config

ROOT = Path(__file__).resolve().parents[2]
ENGINE_BIN = ROOT / ".engine" / "bin"
EMULATED = ("gcp", "azure-native", "hcloud", "proxmoxve", "command", "random")
PASSPHRASE = "engine-tests-passphrase"
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml", "__main__.py", "pyproject.toml", "uv.lock", "README.md")
PROJECT_DIRS = ("resinfra", "images", "policy")

DOCUMENTATION_RANGE = re.compile(r"\b203\.0\.113\.(\d+)")
"""RFC 5737's TEST-NET-3, which the committed stacks use for Proxmox public addresses."""
USER_RANGE = "100.100.16.{}"
"""What a user puts there instead (their own public range; here one no one routes)."""


def engine_path() -> str:
    """``PATH`` with the engine first; skips (fails in CI) when ``tools/engine/install`` has not run."""
    missing = [f"pulumi-resource-{name}" for name in EMULATED if not (ENGINE_BIN / f"pulumi-resource-{name}").exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not in .engine/bin: run bash tools/engine/install")
    path = f"{ENGINE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("pulumi", path=path) is None:
        pytest.skip("no pulumi CLI: run bash tools/engine/install")
    return path


def deployable(stack_file: str) -> str:
    """A committed stack file as a user makes it deployable: their own public range for the
    documentation addresses (the README: "set your admin CIDRs, SSH key, projects and locations")."""
    return DOCUMENTATION_RANGE.sub(lambda m: USER_RANGE.format(m.group(1)), stack_file)


@dataclass
class Project:
    """A copy of the project with its own backend, passphrase and emulated clouds."""

    dir: Path
    env: dict[str, str]

    def run(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(list(args), cwd=self.dir, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}")
        return done

    def pulumi(self, *args: str, stack: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("pulumi", *args, "--stack", stack, "--non-interactive", stdin=stdin, check=check)

    def stack_file(self, stack: str) -> Path:
        return self.dir / f"Pulumi.{stack}.yaml"

    def stack_config(self, stack: str) -> dict[str, Any]:
        return yaml.safe_load(self.stack_file(stack).read_text())["config"]

    def outputs(self, stack: str) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets", stack=stack).stdout)

    def export(self, stack: str, show_secrets: bool = False) -> str:
        return self.pulumi("stack", "export", *(["--show-secrets"] if show_secrets else []), stack=stack).stdout

    def preview(self, stack: str, *args: str) -> dict[str, set[str]]:
        """``pulumi preview --json``: the operations planned for each URN."""
        done = self.pulumi("preview", "--json", *args, stack=stack)
        ops: dict[str, set[str]] = {}
        for step in json.loads(done.stdout).get("steps", []):
            ops.setdefault(step["urn"], set()).add(step["op"])
        return ops

    def cloud(self, stack: str, package: str) -> dict[str, Any]:
        """The emulated cloud's record of ``package``'s resources for ``stack``."""
        path = Path(self.env["RESINFRA_EMULATOR_STATE"]) / f"resinfra.{stack}.{package}.json"
        return json.loads(path.read_text()) if path.exists() else {}


def make_project(base: Path) -> Project:
    """The project's files as a fresh clone has them, and an environment that reaches only the emulators."""
    project = base / "project"
    project.mkdir(parents=True)
    (base / "state").mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, project / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "venv", ".venv"))
    for stack in ("dev", "staging", "prod"):
        path = project / f"Pulumi.{stack}.yaml"
        path.write_text(deployable(path.read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "VIRTUAL_ENV", "UV_PROJECT")) and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        PATH=engine_path(),
        PULUMI_HOME=str(base / "pulumi-home"),
        PULUMI_BACKEND_URL=f"file://{base / 'state'}",
        PULUMI_CONFIG_PASSPHRASE=PASSPHRASE,
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        RESINFRA_EMULATOR_STATE=str(base / "clouds"),
    )
    return Project(project, env)


def sentinel(label: str) -> str:
    return f"SENTINEL-{label}-{secrets.token_hex(8)}"


def set_sentinel_secrets(project: Project, stack: str) -> dict[str, str]:
    """Every secret key the program reads, set with ``pulumi config set --secret`` to a value to search for."""
    values = {
        "resinfra:sshPrivateKey": sentinel("ssh-private-key"),
        "resinfra:notificationWebhookUrl": f"https://{sentinel('webhook').lower()}.invalid/hook",
        "hcloud:token": sentinel("hcloud-token"),
        "gcp:credentials": json.dumps({"type": "service_account", "private_key": sentinel("gcp-key")}),
        "azure-native:clientSecret": sentinel("azure-client-secret"),
        "proxmoxve:apiToken": sentinel("proxmox-token"),
        "resinfra:healerGoogleCredentials": json.dumps({"type": "service_account", "private_key": sentinel("healer-gcp-key")}),
        "resinfra:hetznerFailoverToken": sentinel("hetzner-failover-token"),
    }
    for key, value in values.items():
        project.pulumi("config", "set", "--secret", key, stack=stack, stdin=value)
    nested = {
        "resinfra:healerEnvironment.HCLOUD_TOKEN": sentinel("healer-hcloud-token"),
        "proxmoxve:ssh.privateKey": sentinel("proxmox-ssh-key"),
    }
    for key, value in nested.items():
        project.pulumi("config", "set", "--secret", "--path", key, stack=stack, stdin=value)
    assert set(config.SECRET_KEYS | config.OPTIONAL_SECRET_KEYS) == {k.split(":")[1].split(".")[0] for k in (*values, *nested) if k.startswith("resinfra:")}
    return {**values, **nested}


def init_stack(project: Project, stack: str) -> dict[str, str]:
    """``pulumi stack init`` (passphrase secrets) and every secret set to a sentinel."""
    project.pulumi("stack", "init", stack=stack)
    return set_sentinel_secrets(project, stack)


def replaced(ops: dict[str, set[str]]) -> set[str]:
    return {urn for urn, o in ops.items() if o & {"replace", "create-replacement", "delete-replaced"}}


def changed(ops: dict[str, set[str]]) -> dict[str, set[str]]:
    return {urn: o for urn, o in ops.items() if o - {"same", "read"}}


def resource_name(urn: str) -> str:
    return urn.split("::")[-1]
