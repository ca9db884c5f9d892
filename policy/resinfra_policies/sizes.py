"""VM sizes come from an allow-list per environment (the stack name): no surprise bills, no typos."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resinfra_policies.common import Context, Props, get

DEFAULT_ENVIRONMENT = "dev"
"""Stacks without a list of their own (feature stacks, sandboxes) get the smallest one."""

ALLOWED_SIZES: dict[str, dict[str, Any]] = {
    "dev": {
        "gcp": ["e2-micro", "e2-small", "e2-medium"],
        "azure": ["Standard_B1s", "Standard_B1ms", "Standard_B2s"],
        "hetzner": ["cx22", "cx23", "cx32", "cx33", "cax11"],
        "proxmox": {"maxCores": 2, "maxMemoryMb": 4096},
    },
    "staging": {
        "gcp": ["e2-small", "e2-medium", "e2-standard-2"],
        "azure": ["Standard_B1s", "Standard_B2s", "Standard_B2ms", "Standard_D2s_v5"],
        "hetzner": ["cx22", "cx23", "cx32", "cx33", "cx42", "cx43"],
        "proxmox": {"maxCores": 4, "maxMemoryMb": 8192},
    },
    "prod": {
        "gcp": ["e2-medium", "e2-standard-2", "e2-standard-4", "n2-standard-2", "n2-standard-4"],
        "azure": ["Standard_D2s_v5", "Standard_D4s_v5"],
        "hetzner": ["cx23", "cx33", "cx43", "ccx13", "ccx23"],
        "proxmox": {"maxCores": 8, "maxMemoryMb": 16384},
    },
}
"""Default allow-lists; the policy config ``allowedSizes`` (same shape) replaces them."""


def size_of(resource_type: str, props: Props) -> tuple[str, str] | None:
    """(provider, size) of a machine with a named size; None for other resources."""
    if resource_type == "gcp:compute/instance:Instance":
        machine_type = get(props, "machineType")
        # The API also takes a URL or path (zones/z/machineTypes/e2-small).
        return ("gcp", str(machine_type).rsplit("/", 1)[-1]) if machine_type is not None else ("gcp", "")
    if resource_type == "azure-native:compute:VirtualMachine":
        return "azure", str(get(props, "hardwareProfile", "vmSize") or "")
    if resource_type == "hcloud:index/server:Server":
        return "hetzner", str(get(props, "serverType") or "")
    return None


PROXMOX_VM_TYPES = {"proxmoxve:index/vmLegacy:VmLegacy", "proxmoxve:index/vm:Vm", "proxmoxve:cloned/vmLegacy:VmLegacy", "proxmoxve:cloned/vm:Vm"}


def allowed_for(environment: str, config: Mapping[str, Any]) -> dict[str, Any]:
    lists = config.get("allowedSizes") or ALLOWED_SIZES
    return lists.get(environment) or lists.get(DEFAULT_ENVIRONMENT) or {}


def check_vm_size(resource_type: str, props: Props, context: Context) -> list[str]:
    """Violations of "VM sizes from the environment's allow-list".

    Example: in stack ``dev`` an ``hcloud:index/server:Server`` with ``serverType: ccx63``
    gives one violation listing dev's Hetzner sizes.
    """
    allowed = allowed_for(context.stack, context.config)
    environment = context.stack if context.stack in (context.config.get("allowedSizes") or ALLOWED_SIZES) else DEFAULT_ENVIRONMENT
    if resource_type in PROXMOX_VM_TYPES:
        limits = allowed.get("proxmox") or {}
        cores = int(float(get(props, "cpu", "cores") or 1))
        memory = int(float(get(props, "memory", "dedicated") or 512))
        out = []
        if cores > int(limits.get("maxCores", 0)):
            out.append(f"{cores} cores is above {environment}'s limit of {limits.get('maxCores')} for Proxmox VMs")
        if memory > int(limits.get("maxMemoryMb", 0)):
            out.append(f"{memory} MB memory is above {environment}'s limit of {limits.get('maxMemoryMb')} MB for Proxmox VMs")
        return out
    found = size_of(resource_type, props)
    if found is None:
        return []
    provider, size = found
    sizes = list(allowed.get(provider) or [])
    if size not in sizes:
        return [
            f"size {size or '(none)'} is not allowed in {environment}: use one of {', '.join(sizes)} (or extend the allow-list in policy/resinfra_policies/sizes.py)"
        ]
    return []
