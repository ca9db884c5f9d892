"""The healer on the tooling VM: its settings file, systemd unit, install script, the project bundle it runs, and its two pushes.

The healer runs the very program the deployer ran: the program bundles its own project
(``Pulumi.yaml``, the stack file, ``pyproject.toml``, ``uv.lock``, the ``resinfra``
package) into a deterministic tarball and pushes it; the install script unpacks it,
``uv sync --frozen`` builds its virtualenv (the healer's ``resinfra heal`` and the
program's dependencies, the same lock), and installs the Pulumi CLI of the SDK's version.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.metadata
import io
import json
import shlex
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from resinfra.config import HealerConfig
from resinfra.render.jinja import render_template
from resinfra.render.monitoring import AlertTimings, ToolingLayout
from resinfra.render.push_script import WAIT_FOR_CLOUD_INIT, FileToPush
from resinfra.render.tooling_files import PushSet

HEALER_UNIT = "resinfra-healer.service"
PULUMI_CLI_VERSION = importlib.metadata.version("pulumi")
"""The CLI is released with the SDK under the same version: install the one the lock pins."""
UV_VERSION = "0.13.9"
"""uv from PyPI into its own virtualenv (Ubuntu 24.04 packages no uv)."""
HEALER_NOFILE = 8192
"""The unit's LimitNOFILE (systemd's default soft limit is 1024): the receiver caps connections below it."""
EXIT_REFUSED = 2
"""``resinfra heal``'s exit code when it refuses to start (``resinfra.healer.cli.EXIT_JOURNAL_DAMAGED``); systemd does not restart it."""
BUNDLE_FILES = ("Pulumi.yaml", "__main__.py", "pyproject.toml", "uv.lock", "README.md")
"""Project files besides the package and the stack file (hatchling reads README.md for the package metadata)."""
BUNDLE_SUFFIXES = (".py", ".j2", ".yaml")


@dataclass(frozen=True)
class HealerLayout:
    """Where the healer lives on the tooling VM."""

    user: str = "resinfra-healer"
    etc_dir: str = "/etc/resinfra-healer"
    state_dir: str = "/var/lib/resinfra-healer"
    log_dir: str = "/var/log/resinfra-healer"
    lib_dir: str = "/usr/local/lib/resinfra-healer"
    pulumi_root: str = "/opt/pulumi"
    uv_root: str = "/opt/resinfra-healer/uv"
    systemd_dir: str = "/etc/systemd/system"

    @property
    def settings_file(self) -> str:
        return f"{self.etc_dir}/healer.json"

    @property
    def secrets_dir(self) -> str:
        return f"{self.etc_dir}/secrets"

    @property
    def token_file(self) -> str:
        return f"{self.secrets_dir}/token"

    @property
    def notification_url_file(self) -> str:
        return f"{self.secrets_dir}/notification-url"

    @property
    def environment_file(self) -> str:
        return f"{self.secrets_dir}/environment"

    @property
    def google_credentials_file(self) -> str:
        return f"{self.secrets_dir}/google-credentials.json"

    @property
    def project_dir(self) -> str:
        return f"{self.state_dir}/project"

    @property
    def pulumi_home(self) -> str:
        return f"{self.state_dir}/pulumi-home"

    @property
    def journal(self) -> str:
        return f"{self.state_dir}/journal.sqlite"

    @property
    def audit_log(self) -> str:
        return f"{self.log_dir}/audit.jsonl"

    @property
    def bundle_file(self) -> str:
        return f"{self.lib_dir}/project.tar.gz.b64"

    @property
    def install_script(self) -> str:
        return f"{self.lib_dir}/install.sh"

    @property
    def executable(self) -> str:
        return f"{self.project_dir}/.venv/bin/resinfra"

    @property
    def path(self) -> str:
        return f"{self.pulumi_root}/bin:{self.uv_root}/bin:/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class HealerSecrets:
    """The secrets the healer gets as files (values; None when not configured)."""

    token: str
    notification_url: str | None = None
    environment: Mapping[str, str] | None = None
    """``resinfra:healerEnvironment``: credentials for the backend, the secrets provider and the providers."""
    google_credentials: str | None = None
    """``resinfra:healerGoogleCredentials``: a service-account key JSON (GCS backend, Cloud KMS, the GCP site)."""


def project_bundle(project_dir: Path, stack: str) -> bytes:
    """The project as a deterministic gzipped tarball: the same sources give the same bytes (and the same push hash).

    Example: ``project_bundle(Path("."), "dev")`` holds ``Pulumi.yaml``, ``Pulumi.dev.yaml``, ``uv.lock`` and ``resinfra/**``.
    """
    names = [name for name in (*BUNDLE_FILES, f"Pulumi.{stack}.yaml") if (project_dir / name).is_file()]
    package = project_dir / "resinfra"
    names += sorted(str(p.relative_to(project_dir)) for p in package.rglob("*") if p.is_file() and p.suffix in BUNDLE_SUFFIXES and "__pycache__" not in p.parts)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            data = (project_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = len(data), 0o644, 0, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def settle_seconds(timings: AlertTimings) -> int:
    """The healer's default settle window: how much later than a NodeDown its site's partition may be reported.

    NodeDown's ``for`` clock starts at the first evaluation after the first of the site's scrapes
    fails; SiteUnreachable's after the *last* of them fails (up to one scrape interval later,
    then up to one evaluation): so it fires up to ``scrape + evaluation`` seconds later, plus any
    difference of the two ``for``s. One more evaluation covers Prometheus sending to Alertmanager
    and Alertmanager to the healer. Example: the production timings give 15 + 2 * 15 = 45.
    """
    later_for = max(0, timings.site_unreachable_for - timings.node_down_for)
    return later_for + timings.scrape_interval + 2 * timings.evaluation_interval


def render_settings(
    layout: HealerLayout, tooling: ToolingLayout, healer: HealerConfig, stack: str, secrets: HealerSecrets, timings: AlertTimings | None = None
) -> str:
    """``healer.json``: what ``resinfra heal`` reads (no secret in it, only the files holding them)."""
    assert healer.backend_url is not None, "the healer is deployed only with a backend"
    settings = {
        "listenHost": tooling.healer.host,
        "listenPort": tooling.healer.port,
        "tokenFile": layout.token_file,
        "notificationUrlFile": layout.notification_url_file if secrets.notification_url else None,
        "environmentFile": layout.environment_file,
        "journal": layout.journal,
        "auditLog": layout.audit_log,
        "stack": {"name": stack, "projectDir": layout.project_dir, "backendUrl": healer.backend_url},
        "policy": healer.model_dump(by_alias=True),
        "settleSeconds": healer.settle_seconds if healer.settle_seconds is not None else settle_seconds(timings or AlertTimings()),
    }
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def render_environment(layout: HealerLayout, secrets: HealerSecrets) -> str:
    """The credentials as ``KEY=value`` lines for the healer's ``pulumi`` runs."""
    env = dict(secrets.environment or {})
    if secrets.google_credentials:
        env["GOOGLE_APPLICATION_CREDENTIALS"] = layout.google_credentials_file
    lines = ["# Rendered by resinfra: credentials of the healer's pulumi runs (a secret)."]
    lines += [f"{key}={value}" for key, value in sorted(env.items())]
    return "\n".join(lines) + "\n"


def render_healer_unit(layout: HealerLayout) -> str:
    """The hardened systemd unit of ``resinfra heal``."""
    return render_template(
        "resinfra-healer.service.j2",
        layout=layout,
        argv=[layout.executable, "heal", "--settings", layout.settings_file],
        no_restart_status=EXIT_REFUSED,
        nofile=HEALER_NOFILE,
        acknowledge=f"{layout.executable} heal acknowledge-journal --settings {layout.settings_file}",
    )


def render_install_script(layout: HealerLayout, pulumi_version: str = PULUMI_CLI_VERSION, uv_version: str = UV_VERSION) -> str:
    """The script the push runs: the Pulumi CLI (checksum-verified), uv, the project unpacked and synced, the service restarted."""
    return render_template("healer-install.sh.j2", layout=layout, pulumi_version=pulumi_version, uv_version=uv_version, unit=HEALER_UNIT)


def bundle_digest(bundle: bytes) -> str:
    return hashlib.sha256(bundle).hexdigest()


def healer_push(
    layout: HealerLayout,
    tooling: ToolingLayout,
    healer: HealerConfig,
    stack: str,
    bundle: bytes,
    secrets_shape: HealerSecrets,
    timings: AlertTimings | None = None,
) -> PushSet:
    """The healer's program push: bundle, settings, unit, install script; runs the install (which restarts the service).

    ``timings`` are the monitoring's (the settle window's default derives from them); None: production's.
    """
    q = shlex.quote
    owner = f"{layout.user}:{layout.user}"
    return PushSet(
        purpose="healer",
        files=(
            # Readable by the healer only, like its credentials: it names the backend and the stack.
            FileToPush(layout.settings_file, render_settings(layout, tooling, healer, stack, secrets_shape, timings), "0400", owner),
            FileToPush(f"{layout.systemd_dir}/{HEALER_UNIT}", render_healer_unit(layout), "0644"),
            # Root's alone: the install script runs as root from the push.
            FileToPush(layout.install_script, render_install_script(layout), "0700"),
            # base64: the push script carries text. The install script checks the digest it is given against it.
            FileToPush(layout.bundle_file, base64.b64encode(bundle).decode(), "0600"),
        ),
        before=(WAIT_FOR_CLOUD_INIT, *_healer_dirs(layout)),
        then=(f"{q(layout.install_script)} {bundle_digest(bundle)}",),
    )


def healer_secrets_push(layout: HealerLayout, secrets: HealerSecrets) -> PushSet:
    """The healer's secrets, each readable by its user only (mode 0400); a change restarts it if it runs."""
    owner = f"{layout.user}:{layout.user}"
    files = [
        FileToPush(layout.token_file, secrets.token, "0400", owner),
        FileToPush(layout.environment_file, render_environment(layout, secrets), "0400", owner),
    ]
    if secrets.notification_url:
        files.append(FileToPush(layout.notification_url_file, secrets.notification_url, "0400", owner))
    if secrets.google_credentials:
        files.append(FileToPush(layout.google_credentials_file, secrets.google_credentials, "0400", owner))
    return PushSet(
        purpose="healer-secrets",
        files=tuple(files),
        before=(WAIT_FOR_CLOUD_INIT, *_healer_dirs(layout)),
        then=(f"systemctl try-restart {HEALER_UNIT}",),
    )


def _healer_dirs(layout: HealerLayout) -> tuple[str, ...]:
    """The service user (no login, no home outside its state) and its directories."""
    q = shlex.quote
    user = q(layout.user)
    return (
        f"id -u {user} >/dev/null 2>&1 || useradd --system --user-group --home-dir {q(layout.state_dir)} --no-create-home --shell /usr/sbin/nologin {user}",
        f"install -d -m 0755 -o root -g root {q(layout.etc_dir)} {q(layout.lib_dir)}",
        f"install -d -m 0700 -o {user} -g {user} {q(layout.secrets_dir)} {q(layout.state_dir)} {q(layout.log_dir)}",
    )
