"""cloud-init user-data for every machine the program boots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resinfra.addressing import Role
from resinfra.render.jinja import render_template
from resinfra.render.yamltext import dump_yaml

NODE_EXPORTER_PORT = 9100
ROUTES_UNIT = "resinfra-routes.service"

NODE_EXPORTER_UNIT = "prometheus-node-exporter"


@dataclass(frozen=True)
class Route:
    """A static route the machine adds at boot."""

    destination: str
    via: str


@dataclass(frozen=True)
class WriteFile:
    """A file cloud-init writes; ``defer`` writes it after packages are installed."""

    path: str
    content: str
    permissions: str = "0644"
    defer: bool = False


@dataclass(frozen=True)
class Provisioning:
    """A role's provisioning source (``images/provision``) as user-data: the files and the command that runs them."""

    files: tuple[WriteFile, ...]
    command: tuple[str, ...]
    """Run first in ``runcmd``, before the machine's own commands enable what it installed."""


@dataclass(frozen=True)
class CloudInitSpec:
    """What a machine boots with."""

    hostname: str
    role: Role
    admin_user: str
    ssh_public_key: str
    private_ip: str
    routes: tuple[Route, ...] = ()
    """Routes the OS must add itself (where the cloud's router does not route)."""
    extra_files: tuple[WriteFile, ...] = field(default_factory=tuple)
    """Role-specific files from other renderers (mesh, tooling)."""
    extra_commands: tuple[tuple[str, ...], ...] = ()
    provisioning: Provisioning | None = None
    """The role's provisioning, on a stock image; None on an image that has it baked in (Packer)."""


def render_routes_unit(routes: tuple[Route, ...]) -> str:
    """systemd unit that adds ``routes`` at boot.

    Example: ``render_routes_unit((Route("10.10.0.0/16", "10.10.64.4"),))``.
    """
    return render_template("resinfra-routes.service.j2", routes=routes)


def render_sshd_hardening(admin_user: str) -> str:
    """sshd drop-in: keys only, no root, only the admin user."""
    return render_template("sshd-hardening.conf.j2", admin_user=admin_user)


def files_for(spec: CloudInitSpec) -> list[WriteFile]:
    """Every file the user-data writes, in order: the machine's own, then the role's provisioning source (stock images)."""
    files = [
        WriteFile("/etc/ssh/sshd_config.d/50-resinfra.conf", render_sshd_hardening(spec.admin_user)),
        # Deferred: on an image the package's own conffile exists, then ours replaces it; on a
        # stock image the provisioning installs the package later and keeps ours (confold).
        WriteFile(
            f"/etc/default/{NODE_EXPORTER_UNIT}",
            f'# Rendered by resinfra: listen on the private address only.\nARGS="--web.listen-address={spec.private_ip}:{NODE_EXPORTER_PORT}"\n',
            defer=True,
        ),
    ]
    if spec.routes:
        files.append(WriteFile(f"/etc/systemd/system/{ROUTES_UNIT}", render_routes_unit(spec.routes)))
    files += spec.extra_files
    if spec.provisioning:
        files += spec.provisioning.files
    return files


def commands_for(spec: CloudInitSpec) -> list[list[str]]:
    """Commands run once at first boot, after packages and files: the role's provisioning (stock images), then the machine's own."""
    commands = [list(spec.provisioning.command)] if spec.provisioning else []
    commands += [
        ["systemctl", "restart", "ssh"],
        # The role leaves node_exporter disabled until its listen address is set (above).
        ["systemctl", "enable", NODE_EXPORTER_UNIT],
        ["systemctl", "restart", NODE_EXPORTER_UNIT],
    ]
    if spec.routes:
        commands.append(["systemctl", "daemon-reload"])
        commands.append(["systemctl", "enable", "--now", ROUTES_UNIT])
    return commands + [list(c) for c in spec.extra_commands]


def cloud_config(spec: CloudInitSpec) -> dict[str, Any]:
    """The user-data as data (before YAML)."""
    document: dict[str, Any] = {
        "hostname": spec.hostname,
        "preserve_hostname": False,
        "users": [
            {
                "name": spec.admin_user,
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [spec.ssh_public_key],
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
        "write_files": [{"path": f.path, "content": f.content, "owner": "root:root", "permissions": f.permissions, "defer": f.defer} for f in files_for(spec)],
        "runcmd": commands_for(spec),
    }
    return document


def render_cloud_init(spec: CloudInitSpec) -> str:
    """``#cloud-config`` user-data text for one machine.

    + spec: the machine's role, names, addresses and extra files

    Example: ``render_cloud_init(CloudInitSpec("ri-dev-gcp-worker-1", Role.WORKER, ...))``
    starts with ``#cloud-config``.
    """
    body = dump_yaml(cloud_config(spec))
    return "#cloud-config\n" + body
