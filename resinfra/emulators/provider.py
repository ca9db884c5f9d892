"""One emulated provider plugin: the engine's ResourceProvider gRPC service over an emulated cloud.

The protocol is pulumi/pulumi's proto/pulumi/provider.proto (the Python SDK ships the
generated stubs). What each call must answer is read from the engine's side
(pkg/resource/deploy/step_generator.go, step.go; sdk/go/common/resource/plugin/provider_plugin.go):
``Configure`` says which value forms the plugin accepts (secrets: yes; resource references
and output values: no, so the engine sends ids and plain values); ``Check`` returns the
inputs to use; ``Diff`` the changed paths (the engine turns those under ``replaceOnChanges``
into replacements); ``Create``/``Update`` with ``preview`` return the outputs known before
the change (the rest unknown); ``Read`` an empty id for a resource the cloud no longer has.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import plugin_pb2, provider_pb2, provider_pb2_grpc

from resinfra import provider_outputs
from resinfra.emulators import cloud as clouds
from resinfra.emulators import diff as diffs
from resinfra.emulators import wire
from resinfra.emulators.package import Package

_KIND = {
    (diffs.Change.ADD, False): provider_pb2.PropertyDiff.ADD,
    (diffs.Change.ADD, True): provider_pb2.PropertyDiff.ADD_REPLACE,
    (diffs.Change.DELETE, False): provider_pb2.PropertyDiff.DELETE,
    (diffs.Change.DELETE, True): provider_pb2.PropertyDiff.DELETE_REPLACE,
    (diffs.Change.UPDATE, False): provider_pb2.PropertyDiff.UPDATE,
    (diffs.Change.UPDATE, True): provider_pb2.PropertyDiff.UPDATE_REPLACE,
}

CreateHook = Callable[[clouds.Cloud, str, dict[str, Any], dict[str, Any]], dict[str, Any]]
"""Called after a create or update is applied (cloud, urn, inputs, outputs) → outputs: commands record themselves there."""


def pulumi_name(urn: str) -> str:
    return urn.split("::")[-1]


def resource_type(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


def _set_path(value: Any, path: diffs.Path, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and isinstance(head, str):
        return {**value, head: _set_path(value.get(head), rest, new)}
    if isinstance(value, list) and isinstance(head, int) and head < len(value):
        return [*value[:head], _set_path(value[head], rest, new), *value[head + 1 :]]
    return new


def _resecret(inputs: dict[str, Any], outputs: dict[str, Any], always: frozenset[str]) -> dict[str, Any]:
    """Top-level outputs stay secret where their input was, and the provider's secret outputs are secret."""
    out = {}
    for key, value in outputs.items():
        secret = isinstance(inputs.get(key), wire.Secret) or key in always
        out[key] = wire.Secret(wire.reveal(value)) if secret else value
    return out


def computed_outputs(package: Package, alloc: provider_outputs.Allocator, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The id and outputs the cloud gives a new resource (the rules shared with the mocks)."""
    ident, outputs = provider_outputs.resource_outputs(alloc, typ, name, copy.deepcopy(wire.reveal(inputs)))
    return ident, _resecret(inputs, outputs, package.rules(typ).secret_outputs)


def preview_outputs(package: Package, typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs before the resource exists: the inputs, and unknown wherever the cloud computes a value."""
    if wire.has_unknown(inputs):
        return inputs
    _, outputs = computed_outputs(package, provider_outputs.Allocator(), typ, name, inputs)
    preview = dict(inputs)
    for path in diffs.changes(inputs, outputs):
        preview = _set_path(preview, path, wire.UNKNOWN)
    return preview


HOLD_ENV = "RESINFRA_EMULATOR_HOLD"
"""A file path: while it exists, every create, update and delete waits (a cloud slow to answer),
with ``<path>.waiting`` present. For tests of the stack lock and of interrupted updates."""


def _wait_while_held() -> None:
    hold = os.environ.get(HOLD_ENV)
    if not hold or not Path(hold).exists():
        return
    waiting = Path(f"{hold}.waiting")
    waiting.touch()
    try:
        while Path(hold).exists():
            time.sleep(0.1)
    finally:
        waiting.unlink(missing_ok=True)


class EmulatedProvider(provider_pb2_grpc.ResourceProviderServicer):
    """A provider plugin whose cloud is :mod:`resinfra.emulators.cloud`."""

    def __init__(self, package: Package, on_apply: CreateHook | None = None) -> None:
        self.package = package
        self.on_apply = on_apply

    # -- plugin ------------------------------------------------------------------------------

    def GetPluginInfo(self, request: Any, context: Any) -> plugin_pb2.PluginInfo:
        return plugin_pb2.PluginInfo(version=self.package.version())

    def GetSchema(self, request: Any, context: Any) -> provider_pb2.GetSchemaResponse:
        # A minimal schema: the engine only needs one for code generation and conversion.
        return provider_pb2.GetSchemaResponse(schema=json.dumps({"name": self.package.name, "version": self.package.version()}))

    def CheckConfig(self, request: Any, context: Any) -> provider_pb2.CheckResponse:
        return provider_pb2.CheckResponse(inputs=request.news)

    def DiffConfig(self, request: Any, context: Any) -> provider_pb2.DiffResponse:
        verdict = diffs.judge(wire.decode(request.old_inputs), wire.decode(request.news), frozenset())
        return self._diff_response(verdict, delete_before_replace=False)

    def Configure(self, request: Any, context: Any) -> provider_pb2.ConfigureResponse:
        return provider_pb2.ConfigureResponse(acceptSecrets=True, supportsPreview=True, acceptResources=False, acceptOutputs=False)

    def Cancel(self, request: Any, context: Any) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    # -- resources ---------------------------------------------------------------------------

    def Check(self, request: Any, context: Any) -> provider_pb2.CheckResponse:
        # The program names every resource it declares, so there is nothing to autoname or default.
        return provider_pb2.CheckResponse(inputs=request.news)

    def Diff(self, request: Any, context: Any) -> provider_pb2.DiffResponse:
        typ = request.type or resource_type(request.urn)
        olds = wire.decode(request.old_inputs) if request.HasField("old_inputs") else wire.decode(request.olds)
        news = wire.decode(request.news)
        verdict = diffs.judge(olds, news, self.package.force_new(typ))
        named = self.package.bridged and "name" in news
        return self._diff_response(verdict, delete_before_replace=bool(verdict.replace_keys) and named)

    @staticmethod
    def _diff_response(verdict: diffs.Verdict, delete_before_replace: bool) -> provider_pb2.DiffResponse:
        return provider_pb2.DiffResponse(
            changes=provider_pb2.DiffResponse.DIFF_SOME if verdict.changed_keys else provider_pb2.DiffResponse.DIFF_NONE,
            diffs=verdict.changed_keys,
            replaces=verdict.replace_keys,
            deleteBeforeReplace=delete_before_replace,
            detailedDiff={path: provider_pb2.PropertyDiff(kind=_KIND[kind], inputDiff=True) for path, kind in verdict.detailed.items()},
            hasDetailedDiff=True,
        )

    def Create(self, request: Any, context: Any) -> provider_pb2.CreateResponse:
        typ = request.type or resource_type(request.urn)
        name = request.name or pulumi_name(request.urn)
        inputs = wire.decode(request.properties)
        if request.preview:
            return provider_pb2.CreateResponse(id="", properties=wire.encode(preview_outputs(self.package, typ, name, inputs)))
        _wait_while_held()
        with clouds.opened(request.urn, self.package.name) as cloud:
            self._refuse_duplicate(cloud, typ, inputs, context)
            before = dict(cloud.allocator.addresses)
            ident, outputs = computed_outputs(self.package, cloud.allocator, typ, name, inputs)
            if self.package.generated_ids:
                ident = f"{ident}-{secrets.token_hex(4)}"
            if ident in cloud.resources:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{typ} {ident} already exists")
            if self.on_apply:
                outputs = self.on_apply(cloud, request.urn, inputs, outputs)
            held = [k for k in cloud.allocator.addresses if k not in before]
            cloud.resources[ident] = clouds.CloudResource(typ, request.urn, inputs, outputs, held)
        return provider_pb2.CreateResponse(id=ident, properties=wire.encode(outputs))

    def _refuse_duplicate(self, cloud: clouds.Cloud, typ: str, inputs: dict[str, Any], context: Any) -> None:
        key = self.package.rules(typ).unique_input
        if key is None or key not in inputs:
            return
        for ident, existing in cloud.resources.items():
            if existing.type == typ and wire.reveal(existing.inputs.get(key)) == wire.reveal(inputs[key]):
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{typ}: {key} {wire.reveal(inputs[key])!r} is already used by {ident} (uniqueness_error)")

    def Read(self, request: Any, context: Any) -> provider_pb2.ReadResponse:
        with clouds.opened(request.urn, self.package.name) as cloud:
            found = cloud.resources.get(request.id)
        if found is None:
            # Gone from the cloud: an empty id tells the engine (refresh drops it from the state).
            return provider_pb2.ReadResponse(id="")
        inputs = request.inputs if request.HasField("inputs") and request.inputs.fields else wire.encode(found.inputs)
        return provider_pb2.ReadResponse(id=request.id, properties=wire.encode(found.outputs), inputs=inputs)

    def Update(self, request: Any, context: Any) -> provider_pb2.UpdateResponse:
        typ = request.type or resource_type(request.urn)
        olds = wire.decode(request.olds)
        old_inputs = wire.decode(request.old_inputs) if request.HasField("old_inputs") else olds
        news = wire.decode(request.news)
        changed = {str(path[0]) for path in diffs.changes(old_inputs, news)}
        # An update changes what was asked; what the cloud computed (addresses, ids) stays.
        outputs = {**olds, **{k: news[k] for k in changed if k in news}}
        for key in changed - set(news):
            outputs.pop(key, None)
        outputs = _resecret(news, outputs, self.package.rules(typ).secret_outputs)
        if request.preview:
            return provider_pb2.UpdateResponse(properties=wire.encode(outputs))
        _wait_while_held()
        with clouds.opened(request.urn, self.package.name) as cloud:
            existing = cloud.resources.get(request.id)
            if existing is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{typ} {request.id} does not exist")
                raise AssertionError("unreachable: abort raises")
            if self.on_apply:
                outputs = self.on_apply(cloud, request.urn, news, outputs)
            existing.inputs, existing.outputs = news, outputs
        return provider_pb2.UpdateResponse(properties=wire.encode(outputs))

    def Delete(self, request: Any, context: Any) -> empty_pb2.Empty:
        _wait_while_held()
        with clouds.opened(request.urn, self.package.name) as cloud:
            gone = cloud.resources.pop(request.id, None)
            for key in gone.address_keys if gone else []:
                cloud.allocator.release_ip(key)
        return empty_pb2.Empty()

    def Invoke(self, request: Any, context: Any) -> provider_pb2.InvokeResponse:
        args = wire.reveal(wire.decode(request.args))
        # Invokes carry no URN; the stack is the engine's (PULUMI_STACK is not set for plugins),
        # so lookups are answered from the package's shared, stack-independent catalogue.
        key = hashlib.sha256(json.dumps([request.tok, args], sort_keys=True).encode()).hexdigest()
        with clouds.opened("urn:pulumi:catalogue::lookups", self.package.name) as cloud:
            if key not in cloud.lookups:
                found = provider_outputs.invoke_result(cloud.allocator, request.tok, args)
                if found is None:
                    context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the {self.package.name} emulator does not answer {request.tok}")
                cloud.lookups[key] = found
            result = cloud.lookups[key]
        response = provider_pb2.InvokeResponse()
        getattr(response, "return").update(result)  # `return` is a Python keyword
        return response
