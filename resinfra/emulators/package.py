"""What an emulated provider package knows about its resource types (data, no behaviour)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TypeRules:
    force_new: frozenset[str] = frozenset()
    """Input paths (``a.b``, ``*`` for any key or element) whose change replaces the resource."""
    unique_input: str | None = None
    """An input the cloud keeps unique among resources of this type (creating a second fails)."""
    secret_outputs: frozenset[str] = frozenset()
    """Outputs the provider marks secret whatever the inputs were."""


@dataclass(frozen=True)
class Package:
    name: str
    """The plugin's name: the engine runs ``pulumi-resource-<name>``."""
    sdk_module: str
    """The Python SDK package whose ``pulumi-plugin.json`` names the plugin version it needs."""
    types: dict[str, TypeRules] = field(default_factory=dict)
    identity_inputs: frozenset[str] = frozenset()
    """Inputs that place a resource in the cloud's API (its URL path): changing one is a new resource, for every type."""
    generated_ids: bool = False
    """The provider makes up a new id at every create (not a cloud address): a replacement created
    before its predecessor is deleted never collides with it."""
    bridged: bool = False
    """A Terraform-bridged provider: an explicitly set, otherwise autonamed ``name`` makes a
    replacement delete-before-replace (pulumi-terraform-bridge, ``nameRequiresDeleteBeforeReplace``)."""

    def rules(self, typ: str) -> TypeRules:
        return self.types.get(typ, TypeRules())

    def force_new(self, typ: str) -> frozenset[str]:
        return self.rules(typ).force_new | self.identity_inputs

    def version(self) -> str:
        """The plugin version the installed SDK asks for (so the state records what a real plugin would)."""
        spec = importlib.util.find_spec(self.sdk_module)
        locations = list(spec.submodule_search_locations or []) if spec else []
        for location in locations:
            meta = Path(location) / "pulumi-plugin.json"
            if meta.is_file():
                return str(json.loads(meta.read_text()).get("version", "0.0.0")).removeprefix("v")
        return "0.0.0"
