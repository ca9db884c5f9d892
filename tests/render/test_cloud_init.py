"""cloud-init renderer: golden cases, determinism, and every rendered file checked by cloud-init itself."""

from __future__ import annotations

import json
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
    """``cloud-init schema -c PATH``, the command."""
    return subprocess.run([require_tool("cloud-init"), "schema", "-c", str(path)], capture_output=True, text=True, check=False)


SCHEMA_CHECK_MANY = """
import contextlib, json, sys
from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_file
schema = get_schema()
problems = {}
for path in sys.argv[1:]:
    try:
        with contextlib.redirect_stdout(sys.stderr):  # it prints its deprecations
            validate_cloudconfig_file(path, schema, False)
        problems[path] = ""
    except (SchemaValidationError, RuntimeError) as e:
        problems[path] = str(e) or type(e).__name__
print(json.dumps(problems))
"""
"""What ``cloud-init schema -c PATH`` does for each file (cloud-init 22.4.2, ``cloudinit/config/schema.py``,
``handle_schema_args``: ``validate_cloudconfig_file(path, get_schema(), annotate)``; either error exits 1), in one
process for many files: the command costs about 0.3 CPU-seconds to start and the suite checks about fifty files."""


def schema_check_many(paths: list[Path]) -> dict[Path, str]:
    """cloud-init's own validator over ``paths`` with cloud-init's own interpreter: each path's problem, "" when valid."""
    tool = Path(require_tool("cloud-init"))
    interpreter = tool.read_text().splitlines()[0].removeprefix("#!").strip()
    done = subprocess.run([interpreter, "-c", SCHEMA_CHECK_MANY, *map(str, paths)], capture_output=True, text=True, check=True)
    problems: dict[str, str] = json.loads(done.stdout)
    assert sorted(problems) == sorted(map(str, paths)), done.stderr
    return {Path(path): problem for path, problem in problems.items()}


@pytest.mark.parametrize("shape", list(STACK_SHAPES))
def test_every_rendered_user_data_passes_cloud_init_schema(shape: str, offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    files = [f for f in offline_runs[shape].files if f.purpose == "cloud-init"]
    assert files
    paths = []
    for f in files:
        paths.append(tmp_path / f"{f.machine}.yaml")
        paths[-1].write_text(f.content)
    problems = {path.stem: problem for path, problem in schema_check_many(paths).items() if problem}
    assert problems == {}


def test_schema_check_catches_a_broken_file(tmp_path: Path) -> None:
    """The checker is not a rubber stamp: a wrong type in user-data, or a file without its header, fails it; and the
    command and the many-files check agree on a valid file and on each broken one."""
    valid = tmp_path / "valid.yaml"
    valid.write_text(render_cloud_init(spec_from(CASES[0])))
    broken = tmp_path / "broken.yaml"
    broken.write_text(valid.read_text().replace("ssh_pwauth: false", "ssh_pwauth: [1, 2]"))
    headless = tmp_path / "headless.yaml"
    headless.write_text(valid.read_text().replace("#cloud-config", "# cloud config"))
    many = schema_check_many([valid, broken, headless])
    assert schema_check(valid).returncode == 0 and many[valid] == ""
    for path in (broken, headless):
        assert schema_check(path).returncode != 0
        assert many[path], path.name
    assert "ssh_pwauth" in many[broken]


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
