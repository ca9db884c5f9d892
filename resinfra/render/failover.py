"""A gateway pair's failover files: keepalived.conf, the notify script and its environment file (pure)."""

from __future__ import annotations

from resinfra.failover.plan import FailoverLayout, GatewayFailover, env_values
from resinfra.render.jinja import render_template
from resinfra.render.push_script import FileToPush


def render_keepalived(failover: GatewayFailover) -> str:
    """keepalived.conf of one gateway of a pair: unicast VRRP with its partner, the shared addresses, the notify script.

    Example: ``render_keepalived(pair_failover("proxmox", plan, "10.10.0.0/16", public_prefix=28)[0])`` has
    ``priority 150``, ``unicast_peer { 10.10.64.7 }`` and ``10.10.64.4/24 dev ${PRIVATE_IF}``.
    """
    if not failover.shared:
        raise ValueError(f"{failover.node}: a pair shares at least one address")
    return render_template("keepalived.conf.j2", f=failover, layout=failover.layout)


def render_env(failover: GatewayFailover) -> str:
    """The notify script's settings: ``KEY="value"`` lines, sourced by bash and read back by :func:`resinfra.failover.plan.parse_env`."""
    lines = [f"# Rendered by resinfra: the failover settings of {failover.node} (no secret: the API token is its own file)."]
    lines += [f'{key}="{value}"' for key, value in env_values(failover).items()]
    return "\n".join(lines) + "\n"


def render_failover_script() -> str:
    """The notify script (the same on every gateway of a pair: its settings are the environment file)."""
    return render_template("resinfra-failover.sh.j2")


def failover_files(failover: GatewayFailover, token: str | None = None) -> list[FileToPush]:
    """What a pair's VM gets pushed: the script, its settings, keepalived.conf and, on Hetzner, the API token (0400,
    root's: the notify script runs as root, and nothing else on the gateway reads it)."""
    layout = failover.layout
    files = [
        FileToPush(layout.script, render_failover_script(), "0755"),
        FileToPush(layout.env_file, render_env(failover), "0644"),
        FileToPush(layout.keepalived_conf, render_keepalived(failover), "0644"),
    ]
    if failover.hetzner is not None:
        if not token:
            raise ValueError(f"{failover.node}: a Hetzner pair needs its API token")
        files.append(FileToPush(layout.token_file, token, "0400"))
    return files


def reload_commands(layout: FailoverLayout) -> tuple[str, ...]:
    """After the files: name the NICs, then (re)start keepalived. A running keepalived is reloaded (SIGHUP keeps its
    state): a restart would make the active VM give its addresses up (keepalived sends priority 0 when it stops)."""
    return (
        f"{layout.script} {layout.env_file} interfaces",
        "systemctl enable keepalived.service",
        "systemctl reload-or-restart keepalived.service",
    )
