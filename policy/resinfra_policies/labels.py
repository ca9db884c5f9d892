"""Every resource that can carry labels or tags carries resinfra-stack and resinfra-site (and resinfra-role on machines)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from resinfra_policies.common import MACHINE_TYPES, ROLE_LABEL, ROLES, SITE_LABEL, STACK_LABEL, Context, Props, labels_of

LABEL_SUPPORT_FILE = Path(__file__).with_name("label_support.json")
"""Resource types whose SDK takes labels/tags, generated from the provider SDKs by
``tools/label_support.py`` (a test keeps it current)."""


@cache
def label_support() -> dict[str, str]:
    """Resource type -> the input that holds its labels (``labels`` or ``tags``)."""
    return json.loads(LABEL_SUPPORT_FILE.read_text())["types"]


def check_labels(resource_type: str, props: Props, context: Context) -> list[str]:
    """Violations of "every resource carries the project's labels where the provider supports them".

    Example: an ``hcloud:index/server:Server`` without ``labels`` gives one violation naming
    the three missing keys.
    """
    field = label_support().get(resource_type)
    if field is None:
        return []
    labels = labels_of(resource_type, props, context.provider_props)
    required = [STACK_LABEL, SITE_LABEL] + ([ROLE_LABEL] if resource_type in MACHINE_TYPES else [])
    missing = [key for key in required if not labels.get(key)]
    out = []
    if missing:
        out.append(f"{field} lack {', '.join(missing)}: label it like the rest of its site (resinfra.stack.site_labels)")
    stack = labels.get(STACK_LABEL)
    if stack and stack != context.stack.lower():
        out.append(f"{STACK_LABEL} is {stack!r} in stack {context.stack!r}: a copied label points at another environment")
    role = labels.get(ROLE_LABEL)
    if role and role not in ROLES:
        out.append(f"{ROLE_LABEL} is {role!r}: use one of {', '.join(ROLES)}")
    return out
