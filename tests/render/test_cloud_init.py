"""cloud-init renderer: golden cases, determinism, and every rendered file checked by cloud-init itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from resinfra.addressing import Role
from resinfra.offline import OfflineRun
from resinfra.render.cloud_init import CloudInitSpec, Route, render_cloud_init, render_routes_unit
from tests.conftest import STACK_SHAPES, require_tool

CASES = sorted((Path(__file__).parent / "cloud_init").glob("*.yaml"))
UPDATE = os.environ.get("RESINFRA_UPDATE_GOLDEN") == "1"
"""Set to rewrite the .expected files after an intended change; review the diff."""


def spec_from(case: Path) -> CloudInitSpec:
    data: dict[str, Any] = yaml.safe_load(case.read_text())
    return CloudInitSpec(
        hostname=data["hostname"],
        role=Role(data["role"]),
        admin_user=data["admin_user"],
        ssh_public_key=data["ssh_public_key"],
        private_ip=data["private_ip"],
        routes=tuple(Route(**r) for r in data["routes"]),
    )


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case: Path) -> None:
    expected = case.with_suffix(".expected")
    text = render_cloud_init(spec_from(case))
    if UPDATE:
        expected.write_text(text)
    assert text == expected.read_text()
    assert render_cloud_init(spec_from(case)) == text, "rendering is deterministic"


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("shape", list(STACK_SHAPES))
def test_every_rendered_user_data_passes_cloud_init_schema(shape: str, offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    files = [f for f in offline_runs[shape].files if f.purpose == "cloud-init"]
    assert files
    for f in files:
        path = tmp_path / f"{f.machine}.yaml"
        path.write_text(f.content)
        result = schema_check(path)
        assert result.returncode == 0, f"{f.machine}: {result.stdout}{result.stderr}"


def test_schema_check_catches_a_broken_file(tmp_path: Path) -> None:
    """The checker is not a rubber stamp: a wrong type in user-data fails it."""
    text = render_cloud_init(spec_from(CASES[0])).replace("ssh_pwauth: false", "ssh_pwauth: [1, 2]")
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert schema_check(path).returncode != 0


def analyze(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True, check=False)


def test_routes_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    unit = tmp_path / "resinfra-routes.service"
    unit.write_text(render_routes_unit((Route("10.10.0.0/16", "10.10.64.4"), Route("10.20.0.0/16", "10.10.64.4"))))
    result = analyze(unit)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("ExecStart=", "ExecStrat="))
    assert analyze(broken).stderr.strip(), "systemd-analyze reports an unknown key"
