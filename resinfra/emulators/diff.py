"""Honest property diffs: which input paths changed between two input maps, and which of them
force a replacement (pure).

Paths are written the way the engine parses them (``resource.ParsePropertyPath``:
``a.b[0]``, ``metadata["user-data"]``), at the deepest level that changed, so the engine can
match them against a resource's ``replaceOnChanges`` paths (it matches a detailed diff path
against each ``replaceOnChanges`` path with ``PropertyPath.Contains``, and the top-level
changed keys too: pulumi/pulumi pkg/resource/deploy/step_generator.go, ``applyReplaceOnChanges``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from resinfra.emulators.wire import UNKNOWN, reveal

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class Change(Enum):
    """``pulumirpc.PropertyDiff.Kind`` without the replace variants."""

    ADD = 0
    DELETE = 2
    UPDATE = 4


Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def changes(olds: dict[str, Any], news: dict[str, Any]) -> dict[Path, Change]:
    """Every path whose value differs (secrets compared by value: becoming secret is no change).

    An unknown new value is a change: the provider cannot know it will equal the old one.
    """
    found: dict[Path, Change] = {}
    _walk((), reveal(olds), reveal(news), found)
    return found


_MISSING = object()


def _walk(path: Path, old: Any, new: Any, found: dict[Path, Change]) -> None:
    if old is _MISSING or old is None:
        if new is not _MISSING and new is not None:
            found[path] = Change.ADD
        return
    if new is _MISSING or new is None:
        found[path] = Change.DELETE
        return
    if new == UNKNOWN:
        found[path] = Change.UPDATE
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _walk((*path, key), old.get(key, _MISSING), new.get(key, _MISSING), found)
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            _walk((*path, i), old[i] if i < len(old) else _MISSING, new[i] if i < len(new) else _MISSING, found)
        return
    if old != new:
        found[path] = Change.UPDATE


def covers(force_new: str, path: Path) -> bool:
    """Whether the provider's force-new path (``"a.b"``, ``"*"`` for any element) covers ``path``:
    a change anywhere beneath a force-new attribute replaces the resource."""
    parts = force_new.split(".")
    if len(path) < len(parts):
        return False
    return all(p == "*" or p == str(q) for p, q in zip(parts, path, strict=False))


@dataclass(frozen=True)
class Verdict:
    """What a provider's Diff answers."""

    detailed: dict[str, tuple[Change, bool]]
    """Path → (change, replaces)."""
    changed_keys: list[str]
    replace_keys: list[str]


def judge(olds: dict[str, Any], news: dict[str, Any], force_new: frozenset[str]) -> Verdict:
    detailed: dict[str, tuple[Change, bool]] = {}
    changed: set[str] = set()
    replaced: set[str] = set()
    for path, change in changes(olds, news).items():
        replaces = any(covers(f, path) for f in force_new)
        detailed[format_path(path)] = (change, replaces)
        changed.add(str(path[0]))
        if replaces:
            replaced.add(str(path[0]))
    return Verdict(detailed, sorted(changed), sorted(replaced))
