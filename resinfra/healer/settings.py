"""The healer's settings file (``healer.json``, rendered by the program and pushed to the tooling VM) and the policy from the stack config."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from resinfra.config import HealerConfig
from resinfra.healer.policy import Limit, PolicySettings
from resinfra.render.healer import settle_seconds
from resinfra.render.monitoring import AlertTimings

DEFAULT_SETTLE_SECONDS = float(settle_seconds(AlertTimings()))


def policy_settings(healer: HealerConfig, settle: float | None = None) -> PolicySettings:
    """The policy's thresholds from ``resinfra:healer`` (the one place the two meet); ``settle`` is the rendered default
    of the settle window (from the monitoring's timings), which ``settleSeconds`` overrides."""
    return PolicySettings(
        settle=float(healer.settle_seconds) if healer.settle_seconds is not None else (settle if settle is not None else DEFAULT_SETTLE_SECONDS),
        startup_grace=healer.startup_grace_seconds,
        max_unhealthy=Limit.parse(healer.max_unhealthy),
        max_unhealthy_per_site=Limit.parse(healer.max_unhealthy_per_site),
        cooldown=healer.cooldown_seconds,
        max_backoff=healer.max_backoff_seconds,
        flap_window=healer.flap_window_seconds,
        flap_threshold=healer.flap_threshold,
        repair_gateways=healer.repair_gateways,
        dry_run=healer.dry_run,
    )


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class StackSettings(_Settings):
    name: str
    project_dir: str
    backend_url: str


class HealerSettings(_Settings):
    """Everything ``resinfra heal`` needs on the tooling VM. Secrets are not in here: only the paths of the files holding them."""

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(ge=0, le=65535)
    token_file: str
    """Alertmanager's bearer token (the healer's own copy, readable by its user only)."""
    notification_url_file: str | None = None
    environment_file: str | None = None
    """``KEY=value`` lines: credentials for the backend, the secrets provider and the providers."""
    journal: str
    audit_log: str
    stack: StackSettings | None = None
    """The stack to act on; None with a local action (loopback runs, the lab)."""
    policy: HealerConfig
    alert_ttl_seconds: float = Field(default=900, gt=0)
    """A firing alert Alertmanager has not repeated for this long is dropped (it repeats every 5 minutes)."""
    tick_seconds: float = Field(default=15, gt=0)
    """How often decisions are re-evaluated without a webhook (grace and backoff end by themselves)."""
    inventory_refresh_seconds: float = Field(default=300, gt=0)
    settle_seconds: float = Field(default=DEFAULT_SETTLE_SECONDS, ge=0)
    """The settle window derived from the monitoring's timings (``policy.settleSeconds`` overrides it)."""


def load_settings(path: Path | str) -> HealerSettings:
    return HealerSettings.model_validate_json(Path(path).read_text())


def read_secret_file(path: str | None) -> str | None:
    """A secret's value from its file, without the trailing newline; None when no file is configured."""
    if path is None:
        return None
    return Path(path).read_text().strip() or None


def read_environment_file(path: str | None) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, blank lines ignored); values are taken verbatim."""
    if path is None:
        return {}
    env = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{path}:{number}: expected KEY=value")
        env[key.strip()] = value
    return env
