"""Property values as the engine sends them to a provider plugin, and back.

The engine encodes values in ``google.protobuf.Struct``s with two special forms
(pulumi/pulumi sdk/go/common/resource/plugin/rpc.go, ``MarshalPropertyValue``): a secret is
an object carrying the secret signature key and its ``value``; an unknown (a value computed
by a resource not yet created, during a preview) is a fixed UUID string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2

SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


@dataclass(frozen=True)
class Secret:
    """A secret value: kept secret in everything the emulator returns."""

    value: Any


def decode(struct: struct_pb2.Struct | None) -> dict[str, Any]:
    """A property map from the wire: secrets become :class:`Secret`, unknowns stay the :data:`UNKNOWN` string."""
    if struct is None:
        return {}
    return _decode(json_format.MessageToDict(struct))


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return Secret(_decode(value.get("value")))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode(props: dict[str, Any]) -> struct_pb2.Struct:
    """A property map onto the wire (secrets in the engine's secret form)."""
    out = struct_pb2.Struct()
    out.update(_encode(props))
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, Secret):
        return {SIG_KEY: SECRET_SIG, "value": _encode(value.value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def reveal(value: Any) -> Any:
    """``value`` with every secret unwrapped (for comparing and computing, never for returning)."""
    if isinstance(value, Secret):
        return reveal(value.value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def has_unknown(value: Any) -> bool:
    if isinstance(value, Secret):
        return has_unknown(value.value)
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknown(v) for v in value)
    return value == UNKNOWN


def to_json(value: Any) -> Any:
    """A JSON-storable form (secrets in the engine's secret form), for the emulated cloud's file."""
    return _encode(value)


def from_json(value: Any) -> Any:
    return _decode(value)
