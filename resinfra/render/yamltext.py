"""YAML as reviewers read it: multi-line strings as literal blocks, keys in the order given."""

from __future__ import annotations

from typing import Any

import yaml

# libyaml's emitter when PyYAML was built with it (the wheels are): the same text as the pure-Python one, several
# times faster, which `resinfra plan` notices (every machine's user-data is dumped on every run).
_SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # CSafeDumper: libyaml emitter, SafeRepresenter


class LiteralDumper(_SafeDumper):
    """Writes multi-line strings as ``|`` blocks so file contents and PromQL stay readable in review."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


LiteralDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """``data`` as block-style YAML, keys in insertion order.

    Example: ``dump_yaml({"a": "x\\ny\\n"})`` is ``"a: |\\n  x\\n  y\\n"``.
    """
    return yaml.dump(data, Dumper=LiteralDumper, sort_keys=False, default_flow_style=False, width=1000)
