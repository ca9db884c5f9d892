"""cloud-init user-data for every machine the program boots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resinfra.addressing import Role
from resinfra.render.jinja import render_template
from resinfra.render.yamltext import dump_yaml

NODE_EXPORTER_PORT = 9100
ROUTES_UNIT = "resinfra-routes.service"

ROLE_PACKAGES: dict[Role, tuple[str, ...]] = {
    Role.WORKER: ("prometheus-node-exporter",),
    Role.GATEWAY: ("prometheus-node-exporter", "strongswan-swanctl", "charon-systemd", "libstrongswan-standard-plugins"),
    Role.TOOLING: ("prometheus-node-exporter",),
}
"""Packages each role installs on a stock image."""

GATEWAY_SYSCTL = """\
# Rendered by resinfra: the gateway forwards between its site and the tunnels.
net.ipv4.ip_forward = 1
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
"""


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
class AptSource:
    """An extra apt repository, its signing key fetched by full fingerprint at boot.

    By fingerprint rather than an embedded key: the keyserver hands out the key's current
    self-signatures, so a vendor extending its key's expiry needs no change here, and gpg
    refuses a key whose fingerprint differs.
    """

    name: str
    source: str
    """One-line apt source; ``$KEY_FILE`` is replaced with the key's path (``signed-by``)."""
    key_fingerprint: str
    keyserver: str = "hkp://keyserver.ubuntu.com:80"
    """Port 80: egress filters that pass HTTP but not HKP's 11371 do not break the boot."""


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
    extra_packages: tuple[str, ...] = ()
    extra_commands: tuple[tuple[str, ...], ...] = ()
    apt_sources: tuple[AptSource, ...] = ()
    """Repositories beyond the distribution's (Grafana's on the resinfra VM)."""


def render_routes_unit(routes: tuple[Route, ...]) -> str:
    """systemd unit that adds ``routes`` at boot.

    Example: ``render_routes_unit((Route("10.10.0.0/16", "10.10.64.4"),))``.
    """
    return render_template("resinfra-routes.service.j2", routes=routes)


def render_sshd_hardening(admin_user: str) -> str:
    """sshd drop-in: keys only, no root, only the admin user."""
    return render_template("sshd-hardening.conf.j2", admin_user=admin_user)


def files_for(spec: CloudInitSpec) -> list[WriteFile]:
    """Every file the user-data writes, in order."""
    files = [
        WriteFile("/etc/ssh/sshd_config.d/50-resinfra.conf", render_sshd_hardening(spec.admin_user)),
        # Deferred: the package's own conffile must exist first, then ours replaces it.
        WriteFile(
            "/etc/default/prometheus-node-exporter",
            f'# Rendered by resinfra: listen on the private address only.\nARGS="--web.listen-address={spec.private_ip}:{NODE_EXPORTER_PORT}"\n',
            defer=True,
        ),
    ]
    if spec.role is Role.GATEWAY:
        files.append(WriteFile("/etc/sysctl.d/60-resinfra-gateway.conf", GATEWAY_SYSCTL))
    if spec.routes:
        files.append(WriteFile(f"/etc/systemd/system/{ROUTES_UNIT}", render_routes_unit(spec.routes)))
    return files + list(spec.extra_files)


def commands_for(spec: CloudInitSpec) -> list[list[str]]:
    """Commands run once at first boot, after packages and files."""
    commands = [
        ["systemctl", "restart", "ssh"],
        ["systemctl", "restart", "prometheus-node-exporter"],
    ]
    if spec.role is Role.GATEWAY:
        commands.append(["sysctl", "--system"])
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
        "package_update": True,
        "packages": list(dict.fromkeys(ROLE_PACKAGES[spec.role] + spec.extra_packages)),
        "write_files": [{"path": f.path, "content": f.content, "owner": "root:root", "permissions": f.permissions, "defer": f.defer} for f in files_for(spec)],
        "runcmd": commands_for(spec),
    }
    if spec.apt_sources:
        document["apt"] = {"sources": {f"{s.name}.list": {"source": s.source, "keyid": s.key_fingerprint, "keyserver": s.keyserver} for s in spec.apt_sources}}
    return document


def render_cloud_init(spec: CloudInitSpec) -> str:
    """``#cloud-config`` user-data text for one machine.

    + spec: the machine's role, names, addresses and extra files

    Example: ``render_cloud_init(CloudInitSpec("ri-dev-gcp-worker-1", Role.WORKER, ...))``
    starts with ``#cloud-config``.
    """
    body = dump_yaml(cloud_config(spec))
    return "#cloud-config\n" + body
