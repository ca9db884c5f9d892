"""Loading: ``resinfra:*`` values as Pulumi stores them in, a validated :class:`StackConfig` (or :class:`ConfigError`) out; the secrets checked apart."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from resinfra.config.keys import (
    FAILOVER_TOKEN_KEY,
    HEALER_ENVIRONMENT_NAMES,
    NAMESPACE,
    OPTIONAL_SECRET_KEYS,
    PROVIDER_SECRET_KEYS,
    SECRET_KEYS,
    URL_SECRET_KEYS,
)
from resinfra.config.models import Provider, StackConfig
from resinfra.config.problems import ConfigError, Problem, key_path, problem_from_pydantic
from resinfra.config.rules import check_stack


def parse_config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``resinfra:*`` config entries (as Pulumi stores them) into a plain dict.

    + values: config keys with their namespace (``resinfra:sites``) to values; values are
      either already structured (YAML) or the JSON strings Pulumi hands a program.

    Keys of other namespaces are ignored.
    """
    out: dict[str, Any] = {}
    prefix = NAMESPACE + ":"
    for key, value in values.items():
        if not key.startswith(prefix) or key[len(prefix) :] in SECRET_KEYS | OPTIONAL_SECRET_KEYS:
            continue
        if isinstance(value, str) and value[:1] in "[{":
            # Left as text when it is not JSON: the model then reports the wrong type against the key.
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        out[key[len(prefix) :]] = value
    return out


_STACK_ADAPTER = TypeAdapter(StackConfig)


def _is_http_url(value: str) -> bool:
    """Whether ``value`` looks like an http(s) URL with a host."""
    return re.match(r"^https?://[^/\s]+(/\S*)?$", value.strip()) is not None


def _json_secret(values: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(present, decoded value) of a secret config key whose value is structured (JSON text or already decoded)."""
    value = values.get(f"{NAMESPACE}:{key}")
    if not value:
        return False, None
    if isinstance(value, str):
        try:
            return True, json.loads(value)
        except json.JSONDecodeError:
            return True, None
    return True, value


def plaintext_secret_warnings(config_map: Mapping[str, Any]) -> list[str]:
    """Warnings for secrets written in clear in a stack file's ``config:`` map (``secure:`` values are fine).

    The program reads them all the same, so this is a warning, not an error: the value is in the
    repository and in every copy of the file. Example: ``resinfra:sshPrivateKey: "-----BEGIN..."``
    gives one warning naming the key and ``pulumi config set --secret``.
    """
    secret = {f"{NAMESPACE}:{k}" for k in SECRET_KEYS | OPTIONAL_SECRET_KEYS} | PROVIDER_SECRET_KEYS
    warnings = []
    for key in sorted(k for k in config_map if k in secret):
        value = config_map[key]
        if value in (None, "") or (isinstance(value, Mapping) and set(value) == {"secure"}):
            continue
        warnings.append(
            f"{key}: a secret is written in clear in the stack file (the value is not shown). "
            f"Fix: remove it from the file and run: pulumi config set --secret {key} <value> (or < file)"
        )
    return warnings


def _healer_secret_problems(values: Mapping[str, Any]) -> list[Problem]:
    """The healer's credentials: checked for shape only, never echoed."""
    problems = []
    present, env = _json_secret(values, "healerEnvironment")
    if present:
        key = key_path(["healerEnvironment"])
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            problems.append(
                Problem(
                    key,
                    "is not a map of variable names to text (the value is a secret and is not shown)",
                    f"run: pulumi config set --secret --path '{key}.HCLOUD_TOKEN' <token>",
                )
            )
        else:
            unknown = sorted(str(k) for k in env if k not in HEALER_ENVIRONMENT_NAMES)
            if unknown:
                problems.append(
                    Problem(key, f"sets {', '.join(unknown)}, which the healer does not pass on", f"use only {', '.join(sorted(HEALER_ENVIRONMENT_NAMES))}")
                )
    present, credentials = _json_secret(values, "healerGoogleCredentials")
    if present and not (isinstance(credentials, dict) and credentials.get("type") == "service_account"):
        key = key_path(["healerGoogleCredentials"])
        problems.append(
            Problem(
                key, "is not a service-account key JSON (the value is a secret and is not shown)", f"run: pulumi config set --secret {key} < healer-key.json"
            )
        )
    return problems


def conditional_secret_keys(values: Mapping[str, Any]) -> set[str]:
    """Optional secret keys that this config requires: :data:`FAILOVER_TOKEN_KEY` when a Hetzner site has ``gateways: 2``.

    Read from the raw values (before validation), so an offline run can give it a placeholder as it does the required secrets.
    """
    sites = parse_config_values(values).get("sites")
    pairs = [s for s in sites if isinstance(s, dict) and s.get("provider") == Provider.HETZNER and s.get("gateways") == 2] if isinstance(sites, list) else []
    return {FAILOVER_TOKEN_KEY} if pairs else set()


def load(values: Mapping[str, Any], *, deployment: bool = False) -> StackConfig:
    """Validate ``resinfra:*`` config and return it, or raise :class:`ConfigError`.

    + values: namespaced config entries (see :func:`parse_config_values`)
    + deployment: also refuse what only a real deployment refuses, the placeholders of the
      example stacks (:func:`resinfra.cloud_rules.deployment_problems`); offline runs
      (``resinfra plan``, ``render``, the lab) leave it off and print them instead

    Example::

        load({"resinfra:prefix": "ri-dev", ...})  # -> StackConfig
    """
    raw = parse_config_values(values)
    secret_problems = [
        Problem(
            key_path([key]),
            "missing",
            f"create a key pair for the stack (ssh-keygen -t ed25519 -f stack-key), set resinfra:sshPublicKey to stack-key.pub and run: pulumi config set --secret {key_path([key])} < stack-key",
        )
        for key in sorted(SECRET_KEYS)
        if not values.get(f"{NAMESPACE}:{key}")
    ]
    secret_problems += [
        Problem(
            key_path([key]),
            "is not an http(s) URL (the value is a secret and is not shown)",
            f"run: pulumi config set --secret {key_path([key])} https://...",
        )
        for key in sorted(URL_SECRET_KEYS)
        if values.get(f"{NAMESPACE}:{key}") and not _is_http_url(str(values[f"{NAMESPACE}:{key}"]))
    ]
    secret_problems += _healer_secret_problems(values)
    secret_problems += [
        Problem(
            key_path([key]),
            "missing: a Hetzner site with gateways: 2 moves its Floating IP and network routes through the Hetzner Cloud API "
            "with this token (the value is a secret)",
            "create an API token with Read & Write permission in the Hetzner project of that site (Hetzner Console: Security > API Tokens) "
            f"and run: pulumi config set --secret {key_path([key])} <token>",
        )
        for key in sorted(conditional_secret_keys(values))
        if not values.get(f"{NAMESPACE}:{key}")
    ]
    try:
        cfg = _STACK_ADAPTER.validate_python(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError([*secret_problems, *(problem_from_pydantic(e, raw) for e in exc.errors())]) from None
    problems = secret_problems + check_stack(cfg)
    if deployment:
        from resinfra import cloud_rules  # local: it imports the config package's types

        problems += cloud_rules.deployment_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg
