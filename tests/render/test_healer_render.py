"""The healer's deployment on the tooling VM: unit (systemd-analyze), install and push scripts (shellcheck),
settings (read back by the healer), the project bundle, and under mocks: owner-only secrets that stay secret."""

from __future__ import annotations

import base64
import copy
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from resinfra import stack
from resinfra.config import HealerConfig
from resinfra.healer.settings import HealerSettings, read_environment_file
from resinfra.offline import OfflineRun, run_offline
from resinfra.render.healer import (
    HEALER_UNIT,
    PULUMI_CLI_VERSION,
    HealerLayout,
    HealerSecrets,
    bundle_digest,
    healer_push,
    healer_secrets_push,
    project_bundle,
    render_environment,
    render_healer_unit,
    render_install_script,
)
from resinfra.render.monitoring import ToolingLayout
from resinfra.render.push_script import render_push_script
from tests.conftest import ROOT, dev_config, require_tool

BACKEND = "gs://ri-dev-pulumi-state"
SECRETS = HealerSecrets("token-sentinel", "https://hooks.example.org/url-sentinel", {"HCLOUD_TOKEN": "hcloud-sentinel"}, '{"type": "service_account"}')


def check(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool(command[0]), *command[1:]], capture_output=True, text=True, check=False)


def test_the_unit_passes_systemd_analyze_without_warnings(tmp_path: Path) -> None:
    # The executable exists only once the install script ran: put a stand-in where the layout says.
    layout = HealerLayout(state_dir=str(tmp_path / "state"))
    executable = Path(layout.executable)
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    unit = tmp_path / "units" / HEALER_UNIT
    unit.parent.mkdir()
    unit.write_text(render_healer_unit(layout))
    result = check("systemd-analyze", "verify", str(unit))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    unit.write_text(render_healer_unit(layout).replace("ProtectSystem=strict", "ProtectSystem=very"))
    assert check("systemd-analyze", "verify", str(unit)).stderr.strip(), "systemd-analyze reports a bad value"


def test_the_unit_runs_the_healer_as_its_own_user_with_little_power() -> None:
    text = render_healer_unit(HealerLayout())
    assert "ExecStart=/var/lib/resinfra-healer/project/.venv/bin/resinfra heal --settings /etc/resinfra-healer/healer.json" in text
    for line in ("User=resinfra-healer", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "ProtectHome=yes", "UMask=0077"):
        assert line in text.splitlines()
    assert "ReadWritePaths=/var/lib/resinfra-healer /var/log/resinfra-healer" in text
    assert "Environment=PATH=/opt/pulumi/bin:" in text, "the Automation API finds the CLI"


def test_the_unit_does_not_restart_a_refusal_and_raises_the_file_limit() -> None:
    from resinfra.healer.cli import EXIT_JOURNAL_DAMAGED

    lines = render_healer_unit(HealerLayout()).splitlines()
    assert f"RestartPreventExitStatus={EXIT_JOURNAL_DAMAGED}" in lines and "Restart=on-failure" in lines
    assert "LimitNOFILE=8192" in lines
    assert any("heal acknowledge-journal --settings /etc/resinfra-healer/healer.json" in line for line in lines), "the unit names the way out"


def test_the_install_script_passes_shellcheck(tmp_path: Path) -> None:
    script = tmp_path / "install.sh"
    script.write_text(render_install_script(HealerLayout()))
    result = check("shellcheck", "-s", "bash", str(script))
    assert result.returncode == 0, result.stdout
    text = script.read_text()
    assert f"pulumi_version={PULUMI_CLI_VERSION}" in text and "sha256sum -c --strict" in text
    assert "uv sync --frozen --no-dev" in text


def test_the_pushes_pass_shellcheck_and_keep_secrets_to_the_healer(tmp_path: Path) -> None:
    layout = HealerLayout()
    bundle = project_bundle(ROOT, "dev")
    for push in (healer_secrets_push(layout, SECRETS), healer_push(layout, ToolingLayout(), HealerConfig(backend_url=BACKEND), "dev", bundle, SECRETS)):
        script = tmp_path / f"{push.purpose}.sh"
        script.write_text(render_push_script(list(push.files), push.then, push.before))
        result = check("shellcheck", "-s", "bash", str(script))
        assert result.returncode == 0, f"{push.purpose}: {result.stdout}"
    modes = {f.path: (f.mode, f.owner) for f in healer_secrets_push(layout, SECRETS).files}
    assert set(modes.values()) == {("0400", "resinfra-healer:resinfra-healer")}
    assert set(modes) == {layout.token_file, layout.environment_file, layout.notification_url_file, layout.google_credentials_file}


def test_the_program_push_installs_this_bundle() -> None:
    bundle = project_bundle(ROOT, "dev")
    push = healer_push(HealerLayout(), ToolingLayout(), HealerConfig(backend_url=BACKEND), "dev", bundle, SECRETS)
    files = {f.path: f.content for f in push.files}
    assert base64.b64decode(files["/usr/local/lib/resinfra-healer/project.tar.gz.b64"]) == bundle
    assert push.then == (f"/usr/local/lib/resinfra-healer/install.sh {bundle_digest(bundle)}",)
    modes = {f.path: (f.mode, f.owner) for f in push.files}
    assert modes["/etc/resinfra-healer/healer.json"] == ("0400", "resinfra-healer:resinfra-healer"), "the settings name the backend: the healer's alone"
    assert modes["/usr/local/lib/resinfra-healer/install.sh"] == ("0700", "root:root")


def test_the_settings_are_what_the_healer_reads() -> None:
    config = HealerConfig(backend_url=BACKEND, dry_run=True, max_unhealthy="2")
    push = healer_push(HealerLayout(), ToolingLayout(), config, "prod", project_bundle(ROOT, "prod"), SECRETS)
    settings = HealerSettings.model_validate_json(next(f.content for f in push.files if f.path.endswith("healer.json")))
    assert settings.policy == config
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9797), "where Alertmanager posts"
    assert settings.stack is not None and (settings.stack.name, settings.stack.backend_url) == ("prod", BACKEND)
    assert settings.token_file == "/etc/resinfra-healer/secrets/token" and "sentinel" not in push.files[0].content


def test_the_environment_file_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "environment"
    path.write_text(render_environment(HealerLayout(), SECRETS))
    assert read_environment_file(str(path)) == {
        "HCLOUD_TOKEN": "hcloud-sentinel",
        "GOOGLE_APPLICATION_CREDENTIALS": "/etc/resinfra-healer/secrets/google-credentials.json",
    }


def test_the_bundle_is_the_project_and_nothing_else() -> None:
    bundle = project_bundle(ROOT, "dev")
    assert bundle == project_bundle(ROOT, "dev"), "deterministic: the push re-runs only when the sources change"
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in tar.getmembers())
    for name in (
        "Pulumi.yaml",
        "Pulumi.dev.yaml",
        "__main__.py",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "resinfra/healer/service.py",
        "resinfra/prices.yaml",
    ):
        assert name in names
    assert "resinfra/render/templates/resinfra-healer.service.j2" in names
    assert not any("__pycache__" in n or n.startswith(("tests/", ".venv", "Pulumi.prod")) for n in names)


# Under mocks: the whole program with the healer deployed.


def healer_run(**secrets: str) -> OfflineRun:
    values = {**copy.deepcopy(dev_config()), **{f"resinfra:{k}": v for k, v in secrets.items()}}
    return run_offline(values, secret_keys=["resinfra:sshPrivateKey", *(f"resinfra:{k}" for k in secrets)])


def commands(run: OfflineRun) -> dict[str, Any]:
    return {r.name.rsplit("-push-", 1)[1]: r for r in run.of_type("command:remote:Command") if "-push-" in r.name}


def test_the_healer_is_deployed_with_a_backend_only(offline_runs: dict[str, OfflineRun]) -> None:
    assert {"healer", "healer-secrets"} <= set(commands(offline_runs["all-four"]))
    values = copy.deepcopy(dev_config())
    del values["resinfra:healer"]
    assert "healer" not in commands(run_offline(values))


def test_healer_credentials_stay_secret() -> None:
    google = json.dumps({"type": "service_account", "private_key": "google-key-sentinel"})
    run = healer_run(healerEnvironment=json.dumps({"HCLOUD_TOKEN": "hcloud-sentinel-99"}), healerGoogleCredentials=google)
    pushes = commands(run)
    assert {"stdin", "triggers"} <= pushes["healer-secrets"].secret_inputs
    assert "stdin" in pushes["healer"].secret_inputs, "the bundle push is hidden from previews"
    for sentinel in ("hcloud-sentinel-99", "google-key-sentinel"):
        assert sentinel in pushes["healer-secrets"].inputs["stdin"]
        assert sentinel not in repr(run.outputs)
        for name in ("secrets", "targets", "config", "healer"):
            assert sentinel not in pushes[name].inputs["stdin"]
        for f in run.files:
            assert f.secret or sentinel not in f.content, f"{f.filename} holds a secret but is not marked secret"
    token = next(r for r in run.of_type("random:index/randomPassword:RandomPassword") if r.name.endswith("-healer-token")).outputs["result"]
    healer_token = next(f for f in run.files if f.filename == "etc/resinfra-healer/secrets/token")
    assert healer_token.secret and healer_token.content == token, "the healer's own copy of Alertmanager's token"


def test_the_settings_carry_the_stack_and_its_policy(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    settings = HealerSettings.model_validate_json(next(f.content for f in run.files if f.filename == "etc/resinfra-healer/healer.json"))
    assert settings.stack is not None and settings.stack.name == "dev" and settings.stack.backend_url == BACKEND
    assert settings.policy == run.config.healer
    assert stack.monitoring_plan(run.config, run.result.sites).layout.healer.port == settings.listen_port
