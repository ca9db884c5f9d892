"""The GitHub workflows lint clean (actionlint, the workflow JSON schema, zizmor offline) and keep their safety properties."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
FILES = sorted(WORKFLOWS.glob("*.yml"))


def run(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=False)


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_there_are_review_and_deploy_workflows() -> None:
    assert {f.name for f in FILES} == {"review.yml", "deploy.yml", "pulumi-up.yml"}


def test_actionlint() -> None:
    result = run(BIN / "actionlint", "-color=false")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really runs: an undefined job dependency must fail."""
    shutil.copytree(WORKFLOWS, tmp_path / ".github" / "workflows")
    broken = tmp_path / ".github" / "workflows" / "deploy.yml"
    broken.write_text(broken.read_text().replace("needs: staging", "needs: stagin"))
    result = run(BIN / "actionlint", "-color=false", broken, cwd=tmp_path)
    assert result.returncode == 1 and "stagin" in result.stdout, result.stdout + result.stderr


def test_github_workflow_schema() -> None:
    result = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_offline() -> None:
    result = run(BIN / "zizmor", "--offline", "--no-progress", WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_catches_an_unpinned_action(tmp_path: Path) -> None:
    target = tmp_path / "review.yml"
    text = (WORKFLOWS / "review.yml").read_text()
    target.write_text(re.sub(r"pulumi/actions@[0-9a-f]{40}", "pulumi/actions@main", text))
    result = run(BIN / "zizmor", "--offline", "--no-progress", target)
    assert result.returncode != 0 and "unpinned" in result.stdout


def test_actions_are_pinned_by_full_commit_sha() -> None:
    for path in FILES:
        for ref in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert ref.startswith("./") or re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref}"


def test_permissions_are_empty_by_default_and_minimal_per_job() -> None:
    for path in FILES:
        workflow = load(path.name)
        assert workflow["permissions"] == {}, path.name
        for name, job in workflow["jobs"].items():
            granted = job.get("permissions", {})
            assert set(granted.values()) <= {"read", "write"}
            assert set(granted) <= {"contents", "id-token", "pull-requests"}, f"{path.name}:{name}"
            assert granted.get("contents", "read") == "read", f"{path.name}:{name} may not write the repository"


def test_preview_runs_every_stack_with_the_policy_pack_and_comments() -> None:
    review = load("review.yml")
    assert review[True] == {"pull_request": {"branches": ["main"]}}  # YAML reads "on" as True
    preview = review["jobs"]["preview"]
    steps = {s.get("uses", "").split("@")[0]: s for s in preview["steps"]}
    pulumi = steps["pulumi/actions"]["with"]
    assert pulumi["command"] == "preview" and pulumi["policyPacks"] == "policy" and pulumi["comment-on-pr"] is True
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    assert preview["environment"] == "${{ matrix.stack }}-preview"
    assert "resinfra cost --base" in yaml.safe_dump(review["jobs"]["cost"])


def test_prod_is_deployed_only_through_its_protected_environment_after_staging() -> None:
    deploy = load("deploy.yml")
    assert deploy[True]["push"] == {"branches": ["main"]}
    jobs = deploy["jobs"]
    assert jobs["dev"]["with"]["stack"] == "dev"
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    up = load("pulumi-up.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"
    assert up["concurrency"] == {"group": "pulumi-${{ inputs.stack }}", "cancel-in-progress": False}


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_no_credentials_in_files(path: Path) -> None:
    """Credentials come from OIDC, variables and secrets: never a key file or an inline token."""
    text = path.read_text()
    assert "credentials_json" not in text
    for name, value in re.findall(r"(\w*TOKEN\w*):[ \t]*(.*)", text):
        assert value.startswith(("${{ secrets.", "${{ github.token")), f"{name}: {value}"
