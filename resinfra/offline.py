"""Run the real program offline under Pulumi mocks: no CLI, no credentials, no cloud.

``resinfra plan``, ``resinfra render`` and the tests all go through :func:`run_offline`.
The mocks answer the way the providers do (hcloud ids are integers, Azure echoes names,
servers and addresses get public IPs) so the program's ``apply`` chains run for real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks

from resinfra import cloud_rules, config, gc_thresholds, provider_outputs, stack

PROJECT = "resinfra"
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


@dataclass
class DeclaredResource:
    """One resource the program registered, as the engine saw it."""

    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    provider: str
    inputs: dict[str, Any]
    secret_inputs: set[str]
    """Top-level input names whose value is (or contains) a secret."""
    outputs: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    id: str = ""
    delete_before_replace: bool = False
    replace_with: list[str] = field(default_factory=list)
    """URNs whose replacement replaces this resource too."""
    replace_on_changes: list[str] = field(default_factory=list)
    """Input property paths whose change replaces this resource instead of updating it."""
    ignore_changes: list[str] = field(default_factory=list)
    """Input property paths whose changes the engine ignores (another party owns them)."""


@dataclass
class Lookup:
    """One invoke (data source) the program called, and what the mocks answered."""

    token: str
    args: dict[str, Any]
    provider: str
    result: dict[str, Any]


def _contains_secret(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            return True
        return any(_contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(v) for v in value)
    return False


class CloudMocks(pulumi.runtime.Mocks):
    """Answers resource registrations and invokes like the four providers would (``provider_outputs``'s rules)."""

    def __init__(self) -> None:
        self.allocator = provider_outputs.Allocator()
        self.lookups: list[Lookup] = []

    def public_ip(self, key: str) -> str:
        """A stable fake public address for ``key``."""
        return self.allocator.public_ip(key)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        return provider_outputs.resource_outputs(self.allocator, args.typ, args.name, dict(args.inputs))

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        query = dict(args.args)
        found = provider_outputs.image_lookup(self.allocator, args.token, query)
        if found is not None:
            self.lookups.append(Lookup(args.token, query, args.provider, found))
            return found, []
        return provider_outputs.invoke_result(self.allocator, args.token, query) or {}, []


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock engine, also keeping what each registration carried (parent, secrets, inputs)."""

    def __init__(self, mocks: CloudMocks):
        super().__init__(mocks)
        self.declared: dict[str, DeclaredResource] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if response.urn in self.declared:
            # The real engine refuses a duplicate URN; the mock engine would silently overwrite.
            raise ValueError(f"duplicate resource URN {response.urn}")
        raw = json_format.MessageToDict(request.object)
        inputs = json.loads(json.dumps(raw))
        self.declared[response.urn] = DeclaredResource(
            urn=response.urn,
            type=request.type,
            name=request.name,
            parent=request.parent,
            custom=bool(request.custom),
            provider=request.provider,
            inputs=_unwrap_secrets(inputs),
            secret_inputs={k for k, v in raw.items() if _contains_secret(v)},
            outputs=_unwrap_secrets(json_format.MessageToDict(response.object)) if response.object else {},
            dependencies=list(request.dependencies),
            id=response.id,
            delete_before_replace=bool(request.deleteBeforeReplace),
            replace_with=list(request.replace_with),
            replace_on_changes=list(request.replaceOnChanges),
            ignore_changes=list(request.ignoreChanges),
        )
        return response


def _unwrap_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            return _unwrap_secrets(value.get("value"))
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v) for v in value]
    return value


@dataclass
class ResolvedFile:
    machine: str
    purpose: str
    filename: str
    content: str
    secret: bool


@dataclass
class OfflineRun:
    """What one offline run of the program declared and produced."""

    config: config.StackConfig
    result: stack.StackResult
    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    """Top-level stack outputs marked secret."""
    files: list[ResolvedFile]
    placeholders: list[str] = field(default_factory=list)
    """Secret config keys that were not set and got a placeholder value."""
    lookups: list[Lookup] = field(default_factory=list)
    """Image lookups the program made (hcloud snapshots, Azure images), with the mocks' answers."""
    refused: list[config.Problem] = field(default_factory=list)
    """Placeholders a real deployment refuses (``cloud_rules.deployment_problems``); offline they only warn."""
    placeholder_notes: list[config.Problem] = field(default_factory=list)
    """Placeholders a real deployment accepts but cannot use (``cloud_rules.placeholder_notes``)."""

    def ancestor_types(self, resource: DeclaredResource) -> list[str]:
        """Types of the resource's ancestors, innermost first (followed through ``parent``;
        the mock engine's URNs only name the direct parent's type)."""
        by_urn = {r.urn: r for r in self.resources}
        types = []
        parent = resource.parent
        while parent in by_urn:
            types.append(by_urn[parent].type)
            parent = by_urn[parent].parent
        return types

    def descends_from(self, resource: DeclaredResource, ancestor: DeclaredResource) -> bool:
        by_urn = {r.urn: r for r in self.resources}
        parent = resource.parent
        while parent in by_urn:
            if parent == ancestor.urn:
                return True
            parent = by_urn[parent].parent
        return False

    def of_type(self, typ: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == typ]

    def by_name(self, name: str) -> DeclaredResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]


def config_values(raw: Mapping[str, Any]) -> dict[str, str]:
    """Stack config as the engine hands it to a program: namespaced keys, JSON for structure."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


OFFLINE_SECRET_PLACEHOLDER = "offline-placeholder-secret"
"""Stands in for secret config the offline run does not have (or must not decrypt)."""
OFFLINE_URL_PLACEHOLDER = "https://offline-placeholder.invalid/webhook"
"""Stands in for a secret URL (``.invalid`` never resolves)."""


OFFLINE_STRUCTURED_PLACEHOLDERS = {
    "healerEnvironment": "{}",
    "healerGoogleCredentials": json.dumps({"type": "service_account", "offline": "placeholder"}),
}
"""Stand-ins for secret keys whose value is structured (checked for shape)."""


def placeholder_for(key: str) -> str:
    """The stand-in for the secret config ``key`` (a URL or a structured value where the key must hold one)."""
    name = key.removeprefix(f"{config.NAMESPACE}:")
    if not key.startswith(f"{config.NAMESPACE}:"):
        return OFFLINE_SECRET_PLACEHOLDER
    if name in OFFLINE_STRUCTURED_PLACEHOLDERS:
        return OFFLINE_STRUCTURED_PLACEHOLDERS[name]
    return OFFLINE_URL_PLACEHOLDER if name in config.URL_SECRET_KEYS else OFFLINE_SECRET_PLACEHOLDER


def with_secret_placeholders(values: Mapping[str, Any], secret_keys: list[str] | None) -> tuple[dict[str, Any], list[str], list[str]]:
    """Add placeholders for required secrets that are not set (and those this config requires: :func:`config.conditional_secret_keys`).

    Returns (values, secret keys, keys that got a placeholder).
    """
    out = dict(values)
    keys = list(secret_keys or [])
    added = []
    for key in sorted(config.SECRET_KEYS | config.conditional_secret_keys(values)):
        full = f"{config.NAMESPACE}:{key}"
        if not out.get(full):
            out[full] = OFFLINE_SECRET_PLACEHOLDER
            added.append(full)
        if full not in keys:
            keys.append(full)
    return out, keys, added


def run_offline(values: Mapping[str, Any], stack_name: str = "dev", secret_keys: list[str] | None = None) -> OfflineRun:
    """Validate ``values`` and run the whole program under mocks.

    + values: namespaced stack config (``{"resinfra:prefix": ..., "resinfra:sites": [...]}``)
    + stack_name: the stack the program believes it runs in
    + secret_keys: config keys to mark secret, as ``pulumi config set --secret`` would

    Required secrets that are not set (``resinfra:sshPrivateKey``, a Hetzner pair's failover token) get placeholders: the
    offline run never talks to a machine. Raises :class:`resinfra.config.ConfigError`
    before anything is declared when the config is invalid.
    """
    values, secret_keys, placeholders = with_secret_placeholders(values, secret_keys)
    cfg = config.load(values)
    mocks = CloudMocks()
    monitor = RecordingMonitor(mocks)
    # A fresh root Stack per run: set_mocks only creates one when none exists, and a
    # second run would otherwise hang its resources under the first run's stack.
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack_name, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config_values(values), secret_keys or [])

    captured: dict[str, Any] = {}

    async def resolve() -> None:
        result = stack.main(export=lambda key, value: None, offline=True)
        captured["result"] = result
        outputs, secret = {}, set()
        for key, value in result.outputs.items():
            out = pulumi.Output.from_input(value)
            outputs[key] = await out.future()
            if await out.is_secret():
                secret.add(key)
        files = []
        for f in result.files:
            out = pulumi.Output.from_input(f.content)
            files.append(ResolvedFile(f.machine, f.purpose, f.filename, str(await out.future()), await out.is_secret()))
        captured.update(outputs=outputs, secret=secret, files=files)

    @pulumi.runtime.test
    def program() -> Any:
        return asyncio.ensure_future(resolve())

    with gc_thresholds.while_the_program_runs():
        program()
    resources = list(monitor.declared.values())
    return OfflineRun(
        config=cfg,
        result=captured["result"],
        resources=resources,
        outputs=captured["outputs"],
        secret_outputs=captured["secret"],
        files=captured["files"],
        placeholders=placeholders,
        lookups=mocks.lookups,
        refused=cloud_rules.deployment_problems(cfg),
        placeholder_notes=cloud_rules.placeholder_notes(cfg),
    )
