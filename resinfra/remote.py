"""Pushing rendered files to machines over SSH with pulumi-command.

One ``remote.Command`` per machine and purpose. The script travels on stdin (so secrets
never appear in the command line or in logs) and the command's triggers carry the
script's hash: it re-runs when, and only when, the rendered text changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import pulumi
from pulumi_command import remote

from resinfra.render.push_script import FileToPush, render_push_script
from resinfra.sites.base import Node

PUSH_COMMAND = "sudo bash -s"


class PushVia(StrEnum):
    """Which address pushes connect to."""

    PUBLIC = "public"
    """From the operator's machine or CI (must be inside resinfra:adminCidrs)."""
    PRIVATE = "private"
    """From inside the mesh (the healer on the tooling VM)."""


@dataclass(frozen=True)
class SshAccess:
    """How pulumi-command logs in to machines."""

    user: str
    private_key: pulumi.Input[str]
    via: PushVia = PushVia.PUBLIC


def script_hash(script: str) -> str:
    """The trigger value: sha256 of the script text."""
    return hashlib.sha256(script.encode()).hexdigest()


def push_files(
    name: str,
    node: Node,
    files: pulumi.Input[Sequence[FileToPush]],
    then: Sequence[str],
    access: SshAccess,
    opts: pulumi.ResourceOptions,
    before: Sequence[str] = (),
) -> remote.Command:
    """Install ``files`` on ``node`` and run ``then`` (e.g. ``swanctl --load-all``).

    + name: resource name (prefix it with the owning component's name)
    + node: the machine; its VM resource is a dependency, so a replaced VM is pushed again
    + files: the files, possibly an Output (contents holding secrets stay secret)
    + then: commands run after the files are in place
    + access: SSH user, private key (secret) and which address to use
    + before: commands run before any file is written (e.g. wait for first boot)
    """
    script = pulumi.Output.from_input(files).apply(lambda fs: render_push_script(list(fs), then, before))
    host = node.public_ip if access.via is PushVia.PUBLIC else pulumi.Output.from_input(node.private_ip)
    return remote.Command(
        name,
        connection=remote.ConnectionArgs(host=host, user=access.user, private_key=access.private_key, dial_error_limit=30),
        create=PUSH_COMMAND,
        stdin=script,
        triggers=[script.apply(script_hash), node.resource.id],
        # Replaced with its machine: a new VM boots without the pushed files, and the triggers
        # alone miss it where the provider keeps the id (a Proxmox VM id, a GCE or ARM path).
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[node.resource], replace_with=[node.resource])),
    )
