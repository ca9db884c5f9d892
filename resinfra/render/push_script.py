"""The shell script that installs rendered files on a machine and reloads what reads them."""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

MODE = re.compile(r"^0[0-7]{3}$")

WAIT_FOR_CLOUD_INIT = "cloud-init status --wait >/dev/null || test $? -eq 2"
"""Wait until first boot is done (packages, users, directories); 2 means done with
recoverable warnings (cloud-init 23.4+), anything else fails the push."""


@dataclass(frozen=True)
class FileToPush:
    """A file to install on a machine."""

    path: str
    content: str
    mode: str = "0644"
    owner: str = "root:root"


def render_push_script(files: Sequence[FileToPush], then: Sequence[str] = (), before: Sequence[str] = ()) -> str:
    """A bash script that runs the ``before`` commands, writes ``files`` atomically, then runs the ``then`` commands.

    Contents travel inside quoted here-documents, so nothing in them is expanded; each
    file is written to a temporary name and renamed, so a reader never sees half a file.

    Example: ``render_push_script([FileToPush("/etc/swanctl/conf.d/mesh.conf", text, "0600")],
    ["swanctl --load-all"])``.
    """
    lines = ["#!/bin/bash", "# Rendered by resinfra: installs pushed configuration files.", "set -euo pipefail", "umask 077", *before]
    for f in files:
        if not f.path.startswith("/") or not MODE.match(f.mode):
            raise ValueError(f"{f.path}: need an absolute path and an octal mode, got {f.mode!r}")
        text = f.content if f.content.endswith("\n") else f.content + "\n"
        marker = "RESINFRA_EOF_" + hashlib.sha256(text.encode()).hexdigest()[:16]
        if marker in text:
            raise ValueError(f"{f.path}: content contains the here-document marker")
        path = shlex.quote(f.path)
        tmp = shlex.quote(f.path + ".resinfra-new")
        lines += [
            f"mkdir -p {shlex.quote(f.path.rsplit('/', 1)[0] or '/')}",
            f"cat > {tmp} <<'{marker}'",
            text.rstrip("\n"),
            marker,
            f"chmod {f.mode} {tmp}",
            f"chown {shlex.quote(f.owner)} {tmp}",
            f"mv -f {tmp} {path}",
        ]
    lines += list(then)
    return "\n".join(lines) + "\n"
