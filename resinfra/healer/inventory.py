"""The machines the healer may act on: the stack's ``inventory`` output, with each machine's creation time."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from resinfra.addressing import Role
from resinfra.healer.alerts import parse_time


class InventoryError(ValueError):
    """An inventory document that is not what ``pulumi stack output inventory --json`` prints."""


@dataclass(frozen=True)
class Machine:
    """A machine of the stack, as the healer sees it."""

    name: str
    site: str
    provider: str
    role: Role
    urn: str
    """What ``pulumi up --replace`` targets."""
    created: float | None = None
    """POSIX time the machine's VM was created (the state's ``created``), or None when unknown."""


REQUIRED_KEYS = ("name", "site", "provider", "role", "urn")


def parse_inventory(document: Any) -> list[Machine]:
    """Machines from the ``inventory`` output (a JSON list, as the CLI prints it).

    Each entry needs ``name``, ``site``, ``provider``, ``role`` and ``urn``; an optional
    ``created`` (RFC 3339) gives the creation time, which the stack output does not carry
    (the service reads it from the state; ``resinfra heal simulate`` takes it from here).
    """
    if not isinstance(document, list):
        raise InventoryError("the inventory is not a JSON list (use: pulumi stack output inventory --json)")
    machines = []
    for i, entry in enumerate(document):
        if not isinstance(entry, dict):
            raise InventoryError(f"inventory[{i}] is not an object")
        missing = [k for k in REQUIRED_KEYS if not isinstance(entry.get(k), str)]
        if missing:
            raise InventoryError(f"inventory[{i}] lacks {', '.join(missing)}")
        try:
            role = Role(entry["role"])
        except ValueError:
            raise InventoryError(f"inventory[{i}].role is {entry['role']!r}, not one of {', '.join(r.value for r in Role)}") from None
        created = entry.get("created")
        machines.append(Machine(entry["name"], entry["site"], entry["provider"], role, entry["urn"], parse_time(created) if isinstance(created, str) else None))
    names = [m.name for m in machines]
    if len(set(names)) != len(names):
        raise InventoryError("machine names repeat in the inventory")
    return machines


def load_inventory(text: str) -> list[Machine]:
    """:func:`parse_inventory` of a JSON text."""
    try:
        return parse_inventory(json.loads(text))
    except json.JSONDecodeError as err:
        raise InventoryError(f"not JSON: {err}") from None


def created_times(deployment: Mapping[str, Any]) -> dict[str, float]:
    """Creation time of every resource of an exported stack state (``pulumi stack export``), by URN.

    The engine records ``created`` for each resource (RFC 3339) and resets it when the
    resource is replaced, so a replacement's startup grace starts again.
    """
    resources = deployment.get("resources") or []
    return {r["urn"]: parse_time(r["created"]) for r in resources if isinstance(r, dict) and isinstance(r.get("created"), str) and "urn" in r}


def with_created(machines: Iterable[Machine], created: Mapping[str, float], first_seen: Mapping[str, float]) -> list[Machine]:
    """Machines with their creation time: from the state by URN, else the first time the healer saw them."""
    return [replace(m, created=created.get(m.urn, first_seen.get(m.name, m.created))) for m in machines]
