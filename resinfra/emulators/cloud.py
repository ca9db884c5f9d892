"""The emulated cloud: what exists, by id, per stack and provider package, kept on disk.

The engine starts one plugin process per provider resource and per command, so several
processes may act on one cloud at once: every change happens under an exclusive ``flock``
and is written atomically. The directory is ``$RESINFRA_EMULATOR_STATE`` (default
``~/.local/state/resinfra-emulators``), one file per project, stack and package.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resinfra.emulators import wire
from resinfra.provider_outputs import Allocator

STATE_ENV = "RESINFRA_EMULATOR_STATE"


def state_dir() -> Path:
    configured = os.environ.get(STATE_ENV)
    return Path(configured) if configured else Path.home() / ".local" / "state" / "resinfra-emulators"


@dataclass
class CloudResource:
    type: str
    urn: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    address_keys: list[str] = field(default_factory=list)
    """The allocator's keys of the public addresses this resource holds (released when it is deleted)."""


@dataclass
class Cloud:
    """One package's view of one stack's cloud."""

    resources: dict[str, CloudResource] = field(default_factory=dict)
    allocator: Allocator = field(default_factory=Allocator)
    lookups: dict[str, Any] = field(default_factory=dict)
    """Answers to invokes that name something already in the cloud (an image): the same every time."""
    log: list[dict[str, Any]] = field(default_factory=list)
    """What was asked of the cloud (commands recorded, not run)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "resources": {
                rid: {"type": r.type, "urn": r.urn, "inputs": wire.to_json(r.inputs), "outputs": wire.to_json(r.outputs), "addressKeys": r.address_keys}
                for rid, r in self.resources.items()
            },
            "allocator": {
                "ids": sorted(self.allocator.ids),
                "addresses": self.allocator.addresses,
                "retiredAddresses": sorted(self.allocator.retired_addresses),
            },
            "lookups": self.lookups,
            "log": self.log,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cloud:
        alloc = data.get("allocator", {})
        return cls(
            resources={
                rid: CloudResource(r["type"], r["urn"], wire.from_json(r["inputs"]), wire.from_json(r["outputs"]), r.get("addressKeys", []))
                for rid, r in data.get("resources", {}).items()
            },
            allocator=Allocator(set(alloc.get("ids", [])), dict(alloc.get("addresses", {})), set(alloc.get("retiredAddresses", []))),
            lookups=data.get("lookups", {}),
            log=data.get("log", []),
        )


def cloud_file(urn: str, package: str) -> Path:
    """The file of the cloud a resource ``urn`` lives in (``urn:pulumi:<stack>::<project>::...``)."""
    parts = urn.split("::")
    stack = parts[0].removeprefix("urn:pulumi:")
    project = parts[1] if len(parts) > 1 else "unknown"
    return state_dir() / f"{project}.{stack}.{package}.json"


@contextlib.contextmanager
def opened(urn: str, package: str) -> Iterator[Cloud]:
    """The cloud of ``urn``'s stack, locked; changes made inside are saved on exit."""
    path = cloud_file(urn, package)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f"{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cloud = Cloud.from_json(json.loads(path.read_text())) if path.exists() else Cloud()
        yield cloud
        # Owner-only: like the cloud itself, the file knows the secrets it was given.
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(cloud.to_json(), out, indent=1, sort_keys=True)
        tmp.replace(path)
