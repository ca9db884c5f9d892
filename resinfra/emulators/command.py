"""pulumi-command's remote commands: recorded in the emulated cloud, never run."""

from __future__ import annotations

import hashlib
from typing import Any

from resinfra.emulators import wire
from resinfra.emulators.cloud import Cloud
from resinfra.emulators.package import Package, TypeRules

# pulumi-command provider/pkg/provider/remote/command.go: `triggers` is replaceOnChanges (the
# SDK declares it), `connection` and `stdin` are inputs like any other and update in place,
# which runs the `update` command (or `create` when none is given) again.
PACKAGE = Package(
    name="command",
    sdk_module="pulumi_command",
    # pulumi-command provider/pkg/provider/remote: a command's id is resource.NewUniqueHex (random hex), no address.
    generated_ids=True,
    types={"command:remote:Command": TypeRules(secret_outputs=frozenset())},
)


def record(cloud: Cloud, urn: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """Log what would have run where (host and command; stdin only as its digest: it carries secrets)."""
    plain = wire.reveal(inputs)
    stdin = plain.get("stdin") or ""
    connection = plain.get("connection") or {}
    cloud.log.append(
        {
            "urn": urn,
            "host": connection.get("host"),
            "user": connection.get("user"),
            "command": plain.get("create"),
            "stdinSha256": hashlib.sha256(str(stdin).encode()).hexdigest(),
        }
    )
    # The command's own outputs: what it printed (nothing ran, so nothing).
    return {**outputs, "stdout": "", "stderr": ""}
