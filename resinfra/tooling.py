"""The tooling VM's software: generated secrets and the pushes of its configs, targets and secrets.

The machine itself is declared by its site's component (provider-specific); this
component owns what runs on it. Rendering is done by ``resinfra.render.tooling_files``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_command
import pulumi_random as random
from pulumi_command import remote

from resinfra.config import HealerConfig
from resinfra.remote import SshAccess, push_files
from resinfra.render.healer import HealerLayout, HealerSecrets, healer_push, healer_secrets_push
from resinfra.render.monitoring import MonitoringPlan
from resinfra.render.push_script import FileToPush
from resinfra.render.tooling_files import PushSet, config_push, secrets_push, targets_push
from resinfra.sites.base import Node

TYPE_TOKEN = "resinfra:tooling:ToolingVm"
HEALER_TOKEN_LENGTH = 48
GRAFANA_PASSWORD_LENGTH = 32


@dataclass(frozen=True, kw_only=True)
class ToolingVmArgs:
    """What the tooling VM's software is built from."""

    node: Node
    """The tooling VM (declared by its site's component)."""
    monitoring: MonitoringPlan
    """What to monitor, drawn from the stack's inventory."""
    ssh: SshAccess
    """How the pushes log in."""
    notification_webhook_url: pulumi.Output[str] | None = None
    """``resinfra:notificationWebhookUrl`` (secret), or None for no notifications."""
    healer: HealerArgs | None = None
    """The healer, or None when it is not deployed (no ``resinfra:healer.backendUrl``)."""


@dataclass(frozen=True, kw_only=True)
class HealerArgs:
    """What the healer is deployed with."""

    config: HealerConfig
    stack: str
    bundle: bytes
    """The project the healer runs (``render.healer.project_bundle``)."""
    environment: pulumi.Output[Any] | None = None
    """``resinfra:healerEnvironment`` (secret object), or None."""
    google_credentials: pulumi.Output[str] | None = None
    """``resinfra:healerGoogleCredentials`` (secret), or None."""


@dataclass(frozen=True)
class PushedFile:
    """A file the component pushes, for ``resinfra render``."""

    purpose: str
    path: str
    content: pulumi.Output[str]
    """Secret when the file holds one (``resinfra render`` then writes it mode 0600)."""


class ToolingVm(pulumi.ComponentResource):
    """Prometheus, Alertmanager, blackbox_exporter and Grafana on the tooling VM, configured by pushes."""

    healer_token: pulumi.Output[str]
    """Bearer token Alertmanager presents to the healer (secret)."""
    grafana_admin_password: pulumi.Output[str]
    """Password of Grafana's ``admin`` user (secret)."""
    pushes: dict[str, remote.Command]
    """The push commands by purpose: ``secrets``, ``targets``, ``config``."""
    files: list[PushedFile]

    def __init__(self, name: str, args: ToolingVmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE_TOKEN, name, None, opts)
        plan = args.monitoring
        # Explicit providers, like every site: nothing falls back to ambient configuration.
        random_provider = random.Provider(f"{name}-random", opts=pulumi.ResourceOptions(parent=self))
        command_provider = pulumi_command.Provider(f"{name}-command", opts=pulumi.ResourceOptions(parent=self))
        random_opts = pulumi.ResourceOptions(parent=self, provider=random_provider)
        push_opts = pulumi.ResourceOptions(parent=self, provider=command_provider)

        # Letters and digits only: both end up in files read verbatim (a bearer token, an ini value).
        self.healer_token = pulumi.Output.secret(
            random.RandomPassword(f"{name}-healer-token", length=HEALER_TOKEN_LENGTH, special=False, opts=random_opts).result
        )
        self.grafana_admin_password = pulumi.Output.secret(
            random.RandomPassword(f"{name}-grafana-admin", length=GRAFANA_PASSWORD_LENGTH, special=False, opts=random_opts).result
        )
        url = args.notification_webhook_url
        secrets = pulumi.Output.all(self.healer_token, self.grafana_admin_password, url if url is not None else pulumi.Output.from_input(None)).apply(
            lambda v: secrets_push(plan, v[0], v[1], v[2])
        )
        # Paths and commands of the secrets push do not depend on the secrets' values.
        secrets_shape = secrets_push(plan, "", "", None)
        self.files = [PushedFile(secrets_shape.purpose, f.path, secrets.apply(lambda s, i=i: s.files[i].content)) for i, f in enumerate(secrets_shape.files)]
        push_sets: list[tuple[PushSet, pulumi.Input[Sequence[FileToPush]]]] = [(secrets_shape, secrets.apply(lambda s: list(s.files)))]
        for plain in (targets_push(plan), config_push(plan)):
            push_sets.append((plain, list(plain.files)))
            self.files += [PushedFile(plain.purpose, f.path, pulumi.Output.from_input(f.content)) for f in plain.files]

        # In order: secrets before the services start, targets, then configs (whose push starts them).
        self.pushes = {}
        previous = self._push_in_order(name, args, push_sets, push_opts, [])
        if args.healer is not None:
            self._push_healer(name, args, args.healer, push_opts, previous)
        self.register_outputs(
            {
                "healerToken": self.healer_token,
                "grafanaAdminPassword": self.grafana_admin_password,
                "pushes": {purpose: command.id for purpose, command in self.pushes.items()},
            }
        )

    def _push_healer(self, name: str, args: ToolingVmArgs, healer: HealerArgs, opts: pulumi.ResourceOptions, after: list[pulumi.Resource]) -> None:
        """The healer's secrets, then its program (which installs and restarts it); after the monitoring's pushes."""
        layout, tooling = HealerLayout(), args.monitoring.layout

        def none() -> pulumi.Output[Any]:
            return pulumi.Output.from_input(None)

        url = args.notification_webhook_url
        values = pulumi.Output.all(self.healer_token, url or none(), healer.environment or none(), healer.google_credentials or none())
        secrets = values.apply(lambda v: healer_secrets_push(layout, HealerSecrets(v[0], v[1], v[2], v[3])))
        # Which files exist depends only on which secrets are set, not on their values.
        shape = HealerSecrets("", "set" if url else None, {}, "set" if healer.google_credentials else None)
        secrets_shape = healer_secrets_push(layout, shape)
        program = healer_push(layout, tooling, healer.config, healer.stack, healer.bundle, shape, args.monitoring.timings)
        self.files += [PushedFile(secrets_shape.purpose, f.path, secrets.apply(lambda s, i=i: s.files[i].content)) for i, f in enumerate(secrets_shape.files)]
        self.files += [PushedFile(program.purpose, f.path, pulumi.Output.from_input(f.content)) for f in program.files]
        # The program push carries the project bundle (~250 KB of base64): wrapped as a secret so
        # previews and pull-request comments show "[secret]" instead of a diff of that text.
        bundle_files = pulumi.Output.secret(list(program.files))
        self._push_in_order(name, args, [(secrets_shape, secrets.apply(lambda s: list(s.files))), (program, bundle_files)], opts, after)

    def _push_in_order(
        self,
        name: str,
        args: ToolingVmArgs,
        push_sets: Sequence[tuple[PushSet, pulumi.Input[Sequence[FileToPush]]]],
        opts: pulumi.ResourceOptions,
        after: list[pulumi.Resource],
    ) -> list[pulumi.Resource]:
        """One push command per set, each waiting for the one before (the first for ``after``); returns the last."""
        previous: list[pulumi.Resource] = list(after)
        for push_set, files in push_sets:
            command = push_files(
                f"{name}-push-{push_set.purpose}",
                args.node,
                files,
                push_set.then,
                args.ssh,
                pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=previous)),
                before=push_set.before,
            )
            self.pushes[push_set.purpose] = command
            previous = [command]
        return previous
