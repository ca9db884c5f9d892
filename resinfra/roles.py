"""What a machine is for: its own module, so the lab's quick commands read a lab's state without the config models
the address plan needs (``resinfra.addressing`` imports it from here)."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """What a machine is for."""

    WORKER = "worker"
    GATEWAY = "gateway"
    TOOLING = "tooling"
