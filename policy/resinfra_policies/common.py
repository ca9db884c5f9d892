"""What every rule gets besides the resource: the stack, the provider's inputs, the policy config."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Props = Mapping[str, Any]
"""A resource's inputs with their wire (camelCase) names, as CrossGuard hands them to a policy."""

STACK_LABEL = "resinfra-stack"
SITE_LABEL = "resinfra-site"
ROLE_LABEL = "resinfra-role"
ROLES = ("worker", "gateway", "tooling")


@dataclass(frozen=True)
class Context:
    """Where a resource is being validated."""

    stack: str
    """The stack name (the environment: dev, staging, prod, ...)."""
    provider_props: Props = field(default_factory=dict)
    """Inputs of the resource's provider (GCP's ``defaultLabels`` apply to every resource)."""
    config: Props = field(default_factory=dict)
    """This policy's configuration from the pack config (``--policy-pack-config``)."""


def stack_of_urn(urn: str) -> str:
    """The stack name in a URN: ``urn:pulumi:prod::resinfra::type::name`` gives ``prod``."""
    head = urn.split("::", 1)[0]
    return head.rsplit(":", 1)[-1]


def get(props: Any, *path: str | int) -> Any:
    """``props[path[0]][path[1]]...``, or None where a step is missing or of the wrong kind."""
    node = props
    for step in path:
        if isinstance(step, int):
            if not _is_list(node) or step >= len(node):
                return None
            node = node[step]
        else:
            if not isinstance(node, Mapping) or step not in node:
                return None
            node = node[step]
    return node


def as_list(value: Any) -> list[Any]:
    """A list for a list, [] for None, [value] otherwise."""
    if value is None:
        return []
    if _is_list(value):
        return list(value)
    return [value]


def _is_list(value: Any) -> bool:
    """A list, tuple or any other sequence but text: pulumi-policy hands rules its own read-only
    proxies (``pulumi_policy.proxy``: a ``Sequence`` for lists, a ``Mapping`` for objects)."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def labels_of(resource_type: str, props: Props, provider_props: Props | None = None) -> dict[str, str]:
    """The resource's labels/tags as a key -> value map, whatever the provider's form.

    Proxmox tags are plain strings (``resinfra-role-worker``): each known key becomes a
    label by prefix. GCP provider ``defaultLabels`` are merged under the resource's own.
    """
    provider = resource_type.split(":", 1)[0]
    if provider == "proxmoxve":
        out: dict[str, str] = {}
        for tag in as_list(get(props, "tags")):
            for key in (STACK_LABEL, SITE_LABEL, ROLE_LABEL):
                if isinstance(tag, str) and tag.startswith(key + "-"):
                    out[key] = tag[len(key) + 1 :]
        return out
    field_name = "tags" if provider == "azure-native" else "labels"
    own = get(props, field_name)
    merged: dict[str, str] = {}
    defaults = get(provider_props or {}, "defaultLabels") if provider == "gcp" else None
    if isinstance(defaults, str):
        # Provider inputs travel JSON-encoded when they are not strings.
        with contextlib.suppress(ValueError):
            defaults = json.loads(defaults)
    if isinstance(defaults, Mapping):
        merged.update(defaults)
    if isinstance(own, Mapping):
        merged.update(own)
    return {str(k): str(v) for k, v in merged.items()}


def role_of(resource_type: str, props: Props, provider_props: Props | None = None) -> str | None:
    """The machine role from the ``resinfra-role`` label, if any."""
    return labels_of(resource_type, props, provider_props).get(ROLE_LABEL)


MACHINE_TYPES = frozenset(
    {
        "gcp:compute/instance:Instance",
        "azure-native:compute:VirtualMachine",
        "hcloud:index/server:Server",
        "proxmoxve:index/vmLegacy:VmLegacy",
        "proxmoxve:index/vm:Vm",
        "proxmoxve:cloned/vmLegacy:VmLegacy",
        "proxmoxve:cloned/vm:Vm",
    }
)
"""Resource types that are machines (they carry a role and a size)."""
