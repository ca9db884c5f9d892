"""Typed stack configuration under the ``resinfra:`` namespace, validated before anything is declared.

Every problem is reported with the full config key path (``resinfra:sites[2].machineType``)
and how to fix it. Structural rules (types, unknown keys, bounds) live on the pydantic
models (``models.py``); rules that span several keys (overlaps, duplicates, derived names) live in
:func:`check_stack` (``rules.py``) so each can name the exact key it is about. ``problems.py`` turns
pydantic's errors into keyed problems, ``loading.py`` reads the values and checks the secrets
(:func:`load`), ``keys.py`` names the namespace and its secret keys.

The rest of resinfra imports the config from here, not from the modules.
"""

from resinfra.config.keys import FAILOVER_TOKEN_KEY, NAMESPACE, OPTIONAL_SECRET_KEYS, SECRET_KEYS, URL_SECRET_KEYS
from resinfra.config.loading import conditional_secret_keys, load, plaintext_secret_warnings
from resinfra.config.models import (
    MAX_WORKERS,
    AzureImages,
    AzureSite,
    CostConfig,
    GcpImages,
    GcpSite,
    HealerConfig,
    HetznerImages,
    HetznerSite,
    ImageMode,
    Provider,
    ProxmoxImages,
    ProxmoxSite,
    Site,
    SiteBase,
    SiteImagesBase,
    StackConfig,
    ToolingConfig,
    is_rfc1918,
)
from resinfra.config.problems import ConfigError, Problem, key_path
from resinfra.config.rules import NOT_PUBLIC_IPV4, ROLE_LABEL, check_stack, image_roles

__all__ = [
    "FAILOVER_TOKEN_KEY",
    "MAX_WORKERS",
    "NAMESPACE",
    "NOT_PUBLIC_IPV4",
    "OPTIONAL_SECRET_KEYS",
    "ROLE_LABEL",
    "SECRET_KEYS",
    "URL_SECRET_KEYS",
    "AzureImages",
    "AzureSite",
    "ConfigError",
    "CostConfig",
    "GcpImages",
    "GcpSite",
    "HealerConfig",
    "HetznerImages",
    "HetznerSite",
    "ImageMode",
    "Problem",
    "Provider",
    "ProxmoxImages",
    "ProxmoxSite",
    "Site",
    "SiteBase",
    "SiteImagesBase",
    "StackConfig",
    "ToolingConfig",
    "check_stack",
    "conditional_secret_keys",
    "image_roles",
    "is_rfc1918",
    "key_path",
    "load",
    "plaintext_secret_warnings",
]
