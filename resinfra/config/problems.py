"""Keyed problems (``key: message. Fix: ...``) and turning pydantic's validation errors into them, with their fixes."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from resinfra.config.keys import NAMESPACE, OPTIONAL_SECRET_KEYS, SECRET_KEYS
from resinfra.config.models import (
    MAX_EGRESS_GB_PER_MONTH,
    MAX_WORKERS,
    MIN_WORKERS,
    AzureImages,
    AzureSite,
    CostConfig,
    GcpImages,
    GcpSite,
    HealerConfig,
    HetznerImages,
    HetznerSite,
    Provider,
    ProxmoxImages,
    ProxmoxSite,
    SiteBase,
    SiteImagesBase,
    StackConfig,
    ToolingConfig,
)


@dataclass(frozen=True)
class Problem:
    """One invalid config value: where it is, what is wrong, how to fix it."""

    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}. Fix: {self.fix}."


class ConfigError(Exception):
    """The stack configuration is invalid; nothing has been declared."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"invalid stack configuration ({len(self.problems)} {noun}):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def key_path(loc: Iterable[str | int]) -> str:
    """Render a pydantic location as a config key: ``resinfra:sites[2].machineType``."""
    parts = list(loc)
    if not parts:
        return f"{NAMESPACE}:"
    out = f"{NAMESPACE}:{parts[0]}"
    for part in parts[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _known_fields(loc: list[str | int], raw: Mapping[str, Any]) -> list[str]:
    """The keys allowed at the object that holds ``loc``'s last element."""
    model: type[BaseModel] = StackConfig
    for part in loc[:-1]:
        if isinstance(part, str) and part in NESTED_MODELS:
            model = NESTED_MODELS[part]
    if loc[:1] == ["sites"] and len(loc) >= 3:
        sites = raw.get("sites")
        index = loc[1]
        site = sites[index] if isinstance(sites, list) and isinstance(index, int) and index < len(sites) else None
        provider = str(site.get("provider")) if isinstance(site, dict) else ""
        model = PROVIDER_MODELS.get(provider, SiteBase)
        if loc[2] == "images" and len(loc) >= 4:
            model = PROVIDER_IMAGE_MODELS.get(provider, SiteImagesBase)
    return [f.alias or name for name, f in model.model_fields.items()]


NESTED_MODELS: dict[str, type[BaseModel]] = {"tooling": ToolingConfig, "cost": CostConfig, "healer": HealerConfig}

PROVIDER_MODELS: dict[str, type[BaseModel]] = {
    Provider.GCP: GcpSite,
    Provider.AZURE: AzureSite,
    Provider.HETZNER: HetznerSite,
    Provider.PROXMOX: ProxmoxSite,
}

PROVIDER_IMAGE_MODELS: dict[str, type[BaseModel]] = {
    Provider.GCP: GcpImages,
    Provider.AZURE: AzureImages,
    Provider.HETZNER: HetznerImages,
    Provider.PROXMOX: ProxmoxImages,
}

RETIRED_SITE_KEYS = {"image": "images"}
"""Site keys that were replaced, by their successor: a stack that still has one gets a migration message."""


def _retired_site_key(loc: list[str | int], value: Any, raw: Mapping[str, Any]) -> Problem:
    """The migration message for a retired site key (``image``: one image for every machine of the site)."""
    key = key_path(loc)
    site = raw["sites"][loc[1]]
    provider = str(site.get("provider")) if isinstance(site, dict) else ""
    roles = ["worker", "gateway", "tooling"] if provider in (Provider.HETZNER, Provider.PROXMOX) else ["worker", "tooling"]
    overrides = ", ".join(f"{role}: {json.dumps(value)}" for role in roles)
    return Problem(
        key,
        f"replaced by {key_path([*loc[:-1], 'images'])} (an image per role, stock or Packer-built)",
        f"for the same machines write 'images: {{overrides: {{{overrides}}}}}' (stock mode: the full user-data), "
        "or build the images in images/ and write 'images: {mode: packer}'",
    )


def _gateways_problem(key: str, kind: str, value: Any) -> Problem:
    """``gateways`` on a site whose cloud runs the VPN gateway, or a count other than 1 or 2."""
    if kind == "extra_forbidden":
        return Problem(
            key,
            "this site has no gateway VM: its cloud runs the VPN gateway (Azure's redundancy is activeActive, GCP's HA VPN has two interfaces)",
            "remove it; gateways applies to hetzner and proxmox sites",
        )
    return Problem(key, f"{value!r} is not allowed: a site runs one strongSwan gateway VM or a pair", "use 1, or 2 for a pair that fails over in seconds")


def problem_from_pydantic(err: Any, raw: Mapping[str, Any]) -> Problem:
    loc: list[str | int] = list(err["loc"])
    # Discriminated unions add the tag to the location (sites.0.gcp.zone): drop it.
    if len(loc) >= 3 and loc[0] == "sites" and loc[2] in PROVIDER_MODELS:
        loc = loc[:2] + loc[3:]
    kind = err["type"]
    # A dict key that is not allowed is reported at that key (sites.0.images.overrides.gateway.[key]).
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        if kind == "literal_error" and err.get("input") == "gateway":
            return Problem(
                key_path(loc), "sites of this provider have no gateway VM (the cloud runs the VPN gateway)", f"remove it; use {err['ctx']['expected']}"
            )
    key = key_path(loc)
    value = err.get("input")
    if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "sites" and loc[2] in RETIRED_SITE_KEYS:
        return _retired_site_key(loc, value, raw)
    if len(loc) == 3 and loc[0] == "sites" and loc[2] == "gateways":
        return _gateways_problem(key, kind, value)
    if kind == "extra_forbidden":
        known = _known_fields(loc, raw)
        if len(loc) == 1:
            # The secret keys are read apart from the model (never validated as plain values), yet they are keys here.
            known = [*known, *SECRET_KEYS, *OPTIONAL_SECRET_KEYS]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "remove it."
        return Problem(key, "unknown key", f"{hint} Known keys here: {', '.join(sorted(known))}")
    if kind == "union_tag_invalid":
        return Problem(
            key_path([*loc, "provider"]),
            f"unknown provider {value.get('provider')!r}" if isinstance(value, dict) else "unknown provider",
            f"use one of {', '.join(p.value for p in Provider)}",
        )
    if kind == "union_tag_not_found":
        return Problem(
            key_path([*loc, "provider"]),
            "missing",
            f"add 'provider:' with one of {', '.join(p.value for p in Provider)}",
        )
    if kind == "missing":
        return Problem(key, "missing", _MISSING_FIXES.get(key, f"set {key} (see docs/configuration.md)"))
    if kind == "list_type":
        return Problem(key, f"{value!r} is not a list", f"write {key} as a YAML list, one entry per line starting with '- '")
    if kind == "string_pattern_mismatch" and "overrides" in loc:
        return Problem(
            key,
            f"{value!r} has the wrong form",
            "give the image's resource id: /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Compute/images/<name> "
            "(or .../galleries/<gallery>/images/<definition>[/versions/<version>])",
        )
    if kind == "string_pattern_mismatch":
        return Problem(key, f"{value!r} has the wrong form", _PATTERN_FIXES.get(str(loc[-1]), f"it must match {err['ctx']['pattern']}"))
    if kind in ("greater_than_equal", "less_than_equal", "too_short", "too_long", "string_too_long", "string_too_short"):
        return Problem(key, f"{value!r} is out of bounds ({err['msg'].lower()})", _bounds_fix(loc))
    if kind in ("float_parsing", "int_parsing", "float_type", "int_type"):
        return Problem(key, f"{value!r} is not a number", _bounds_fix(loc))
    if kind == "value_error":
        cause = str(err["ctx"].get("error", err["msg"]))
        fix = _VALUE_FIXES.get(str(loc[-1]), "write an IPv4 address or network such as 10.10.0.0/16 (no host bits set in a network)")
        return Problem(key, f"{value!r} is not valid ({cause})", fix)
    if kind == "enum":
        return Problem(key, f"{value!r} is not allowed", f"use {err['ctx']['expected']}")
    if kind == "literal_error":
        return Problem(key, f"{value!r} is not allowed", f"use {err['ctx']['expected']}")
    return Problem(key, err["msg"].lower(), "see docs/configuration.md")


_MISSING_FIXES = {
    key_path(["sshPublicKey"]): 'run: pulumi config set resinfra:sshPublicKey "$(cat ~/.ssh/id_ed25519.pub)"',
    key_path(["adminCidrs"]): "run: pulumi config set --path 'resinfra:adminCidrs[0]' <your office or VPN range>",
    key_path(["prefix"]): "run: pulumi config set resinfra:prefix <short name, e.g. ri-dev>",
}

_VALUE_FIXES = {"nodeAddress": "give the host name or IPv4 address the Proxmox VE node answers SSH on"}

_PATTERN_FIXES = {
    "name": "use lowercase letters, digits and '-', starting with a letter and not ending with '-' (at most 30 characters)",
    "prefix": "use lowercase letters, digits and '-', starting with a letter and not ending with '-' (at most 30 characters)",
    "adminUser": "use lowercase letters, digits and '-', starting with a letter",
    "node": "use the Proxmox VE node's name as shown in the cluster view",
    "project": "use the GCP project id (6-30 lowercase letters, digits and '-'), not its display name or number",
    "region": "use a GCP region such as europe-west3",
    "zone": "use a GCP zone such as europe-west3-a",
    "location": "use an Azure region name such as westeurope (lowercase, no spaces)",
    "resourceGroup": "use at most 90 letters, digits, '-', '_', '.', '(' or ')', not ending with '.'",
    "maxUnhealthy": "give a count of machines (2) or a percentage from 0% to 100% (34%)",
    "maxUnhealthyPerSite": "give a count of machines (1) or a percentage from 0% to 100% (50%)",
}


_HEALER_BOUNDS_FIXES = {
    "startupGraceSeconds": "give 0 to 86400 seconds (the default 900 covers a slow first boot)",
    "cooldownSeconds": "give 60 to 86400 seconds between two repairs of one machine",
    "maxBackoffSeconds": "give 60 to 604800 seconds, at least cooldownSeconds",
    "flapWindowSeconds": "give 60 to 604800 seconds",
    "flapThreshold": "give 2 to 100 down episodes",
    "repairTimeoutSeconds": "give 300 to 21600 seconds (an Azure VM replacement takes several minutes)",
}


def _bounds_fix(loc: list[str | int]) -> str:
    field = str(loc[-1])
    if field == "workers":
        return f"use between {MIN_WORKERS} and {MAX_WORKERS} workers per site"
    if field == "number":
        return "use a site number of 1 or more"
    if field == "sitePrefixLength":
        return "use a prefix length between 9 and 23 (a /20 gives 4094 addresses per site)"
    if field == "egressGbPerMonth":
        return f"give the GB each site sends to the internet a month, from 0 to {MAX_EGRESS_GB_PER_MONTH}"
    if field in ("adminCidrs", "sites"):
        return f"list at least one entry under {key_path(loc)}"
    if loc[:1] == ["healer"]:
        return _HEALER_BOUNDS_FIXES.get(field, "see the healer keys in docs/configuration.md")
    return "see docs/configuration.md"
