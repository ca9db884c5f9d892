"""Generate policy/resinfra_policies/label_support.json: which resource types take labels/tags, read from the provider SDKs.

Run ``uv run python tools/label_support.py`` after upgrading a provider SDK; a test fails
while the file is stale.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "policy" / "resinfra_policies" / "label_support.json"

MODULES = {
    # package -> (modules whose resources the project may declare, the labels input)
    "pulumi_gcp": (["compute"], "labels"),
    "pulumi_azure_native": (["network", "compute", "resources"], "tags"),
    "pulumi_hcloud": ([""], "labels"),
    "pulumi_proxmoxve": (["", "firewall", "network", "cloned"], "tags"),
}
_REGISTRATION = re.compile(r'resource_modules="""(.*?)"""', re.S)


def registered_classes(package: str) -> list[tuple[str, str, str]]:
    """(type token, python module, class name) of every resource a package registers."""
    source = Path(importlib.import_module(package).__file__ or "").read_text()
    match = _REGISTRATION.search(source)
    if not match:
        raise RuntimeError(f"{package}: no resource registration found")
    out = []
    for module in json.loads(match.group(1)):
        for token, cls in module["classes"].items():
            out.append((token, module["fqn"], cls))
    return out


def label_support() -> dict[str, str]:
    """Type token -> labels input name, for every resource of :data:`MODULES` that takes one."""
    support: dict[str, str] = {}
    for package, (modules, field) in MODULES.items():
        wanted = {f"{package}.{m}".rstrip(".") for m in modules}
        for token, fqn, cls_name in registered_classes(package):
            if fqn not in wanted:
                continue
            cls = getattr(importlib.import_module(fqn), cls_name)
            if field in inspect.signature(cls._internal_init).parameters:
                support[token] = field
    return dict(sorted(support.items()))


def render() -> str:
    return json.dumps({"generatedBy": "tools/label_support.py", "types": label_support()}, indent=1) + "\n"


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT} ({len(json.loads(OUT.read_text())['types'])} types)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
