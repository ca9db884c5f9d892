"""What every ``lab`` command checks before it acts: that it runs as root (and, if not, why it must), that the tools the
lab runs are installed; and where a lab's state lives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from resinfra.debian_paths import NODE_EXPORTER_BIN
from resinfra.lab.names import STATE_ROOT
from resinfra.netlab.charon import CHARON

TOOLS = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ping": "iputils-ping",
    "swanctl": "strongswan-swanctl",
    CHARON: "strongswan-charon libcharon-extra-plugins libstrongswan-standard-plugins",
    "bird": "bird2",
    "birdc": "bird2",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    NODE_EXPORTER_BIN: "prometheus-node-exporter",
    "keepalived": "keepalived",
    "curl": "curl",
    "jq": "jq",
}
"""What the lab runs, and the Debian package each comes from (``.ci/run`` installs them all)."""


class LabUsageError(RuntimeError):
    """The command cannot run here (not root, tools missing, a lab already up)."""


def root_of(name: str) -> Path:
    return STATE_ROOT / name


ROOT_NEEDS = {
    "up": "it creates network namespaces and runs IPsec gateways, the monitoring and the healer in them",
    "status": "it reads the lab's state (root's, under /var/lib/resinfra-lab) and asks the gateways in the lab's namespaces",
    "kill": "it kills the machine's processes and takes its links down inside the lab's namespaces",
    "replace": "it re-creates the machine's namespace and starts its processes",
    "partition": "it changes links inside the lab's namespaces",
    "heal": "it changes links inside the lab's namespaces",
    "kill-instance": "it changes links inside the lab's namespaces and stops the instance's gateways",
    "revive-instance": "it starts processes in the lab's namespaces",
    "restart-healer": "it signals the healer (root's process) and starts it again in the tooling VM's namespace",
    "down": "it stops the lab's processes and deletes its namespaces",
}
"""What each ``lab`` command does that only root may: said when a user runs it as someone else."""


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise LabUsageError(
            f"resinfra lab {command} needs root: {ROOT_NEEDS[command]}. Run it as root, with the virtualenv's command: .venv/bin/resinfra lab {command}"
        )


def missing_tools() -> list[str]:
    """Tools the lab needs that are not installed, with their Debian packages."""
    return [
        f"{tool} (Debian: {package})"
        for tool, package in TOOLS.items()
        if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool) is not None)
    ]
