"""The configuration reference (docs/configuration.md) names every key the config models accept, nothing else, with the models' defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from resinfra import config

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

SITE_TABLES: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "## GCP": (config.GcpSite, config.GcpImages),
    "## Azure": (config.AzureSite, config.AzureImages),
    "## Hetzner Cloud": (config.HetznerSite, config.HetznerImages),
    "## Proxmox VE": (config.ProxmoxSite, config.ProxmoxImages),
}
NESTED = {"tooling": config.ToolingConfig, "cost": config.CostConfig, "healer": config.HealerConfig}
IMAGES_FIELD = "images"


def table_after(heading: str) -> list[tuple[list[str], list[str]]]:
    """(keys, defaults) of each row of the first table under the heading that starts with ``heading``."""
    lines = REFERENCE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("| `"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        keys = re.findall(r"`([^`]+)`", cells[0])
        default_cell = cells[2] if len(cells) == 4 else cells[1]
        defaults = [d.strip() for d in default_cell.split(" / ")] if len(keys) > 1 else [default_cell]
        rows.append((keys, defaults if len(defaults) == len(keys) else [default_cell] * len(keys)))
    assert rows, f"no table under {heading!r}"
    return rows


def aliases(model: type[BaseModel]) -> dict[str, Any]:
    return {field.alias or name: field for name, field in model.model_fields.items()}


def expected_default(cell: str) -> Any:
    """A default cell as a value to compare, or None when it is prose (required, unset, derived)."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    if match is None:
        return None
    text = match[1]
    with_json = text if not re.fullmatch(r"[A-Za-z_][\w.%/-]*", text) or text in ("true", "false") else json.dumps(text)
    try:
        return json.loads(with_json)
    except json.JSONDecodeError:
        return text


def check_row(key: str, cell: str, field: Any, references: frozenset[str] = frozenset()) -> list[str]:
    """Problems of one documented key's default; a default naming another key (``serverType``) is prose."""
    problems = []
    if cell == "required":
        if not field.is_required():
            problems.append(f"{key}: documented as required, has a default")
        return problems
    if field.is_required():
        problems.append(f"{key}: documented with default {cell!r}, is required")
        return problems
    documented = expected_default(cell)
    if documented is None or (isinstance(documented, str) and documented in references):
        return problems
    actual = field.default if field.default is not PydanticUndefined else field.default_factory()
    actual = actual.value if hasattr(actual, "value") else actual
    if documented != actual and str(documented) != str(actual):
        problems.append(f"{key}: documented default {documented!r}, the code's is {actual!r}")
    return problems


def test_stack_keys_match_the_models() -> None:
    documented: dict[str, str] = {}
    for keys, defaults in table_after("## Stack keys"):
        first = keys[0].removeprefix("resinfra:")
        parent = first.rsplit(".", 1)[0] + "." if "." in first else ""
        for i, (key, default) in enumerate(zip(keys, defaults, strict=True)):
            key = key.removeprefix("resinfra:")
            documented[key if i == 0 or "." in key else parent + key] = default
    known: dict[str, Any] = {}
    for alias, field in aliases(config.StackConfig).items():
        if alias in NESTED:
            known.update({f"{alias}.{sub}": f for sub, f in aliases(NESTED[alias]).items()})
        else:
            known[alias] = field
    secrets = config.SECRET_KEYS | config.OPTIONAL_SECRET_KEYS
    assert sorted(set(known) | secrets) == sorted(documented)
    problems = [p for key, field in known.items() for p in check_row(key, documented[key], field)]
    problems += [f"{key}: documented as required, optional" for key in config.OPTIONAL_SECRET_KEYS if documented[key] == "required"]
    assert not problems


def test_site_keys_match_the_models() -> None:
    common = {key: default for keys, defaults in table_after("## Site keys") for key, default in zip(keys, defaults, strict=True)}
    base = aliases(config.SiteBase)
    image_base = aliases(config.SiteImagesBase)
    assert sorted(common) == sorted([*base, "provider", *(f"images.{k}" for k in image_base), "images.overrides.<role>"])
    problems = [p for key, field in base.items() for p in check_row(key, common[key], field)]
    problems += [p for key, field in image_base.items() for p in check_row(f"images.{key}", common[f"images.{key}"], field)]
    for heading, (site_model, images_model) in SITE_TABLES.items():
        rows = {key: default for keys, defaults in table_after(heading) for key, default in zip(keys, defaults, strict=True)}
        own = {k: f for k, f in aliases(site_model).items() if k not in base and k not in ("provider", IMAGES_FIELD)}
        own_images = {f"images.{k}": f for k, f in aliases(images_model).items() if k not in image_base and k != "overrides"}
        assert sorted(rows) == sorted({**own, **own_images}), heading
        problems += [p for key, field in {**own, **own_images}.items() for p in check_row(f"{heading}: {key}", rows[key], field, frozenset(own))]
    assert not problems


@pytest.mark.parametrize("cell, value", [("`20`", 20), ("`false`", False), ('`["1","2","3"]`', ["1", "2", "3"]), ("`34%`", "34%"), ("`cx23`", "cx23")])
def test_default_cells_parse(cell: str, value: Any) -> None:
    assert expected_default(cell) == value
