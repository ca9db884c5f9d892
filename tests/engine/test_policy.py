"""The CrossGuard pack under the engine: ``pulumi preview --policy-pack policy``."""

from __future__ import annotations

import pytest
import yaml

from tests.engine.harness import ROOT, Project, deployable, init_stack


@pytest.fixture(scope="module")
def pack(project: Project) -> str:
    """The pack's virtualenv, made as the README says (uv venv policy/venv, then its requirements)."""
    project.run("uv", "venv", "--quiet", "policy/venv")
    project.run("uv", "pip", "install", "--quiet", "--python", "policy/venv/bin/python", "-r", "policy/requirements.txt")
    return "policy"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_committed_stacks_pass_the_pack(project: Project, pack: str, stack: str) -> None:
    init_stack(project, stack)
    done = project.pulumi("preview", "--policy-pack", pack, stack=stack)
    assert "resinfra-policies" in done.stdout, "the pack ran"
    assert "[mandatory]" not in done.stdout, "no mandatory policy is violated"


def test_ssh_from_anywhere_is_refused_with_the_policys_message(project: Project, pack: str) -> None:
    """With the config flag that lets the program accept it, 0.0.0.0/0 for SSH still stops the preview at the pack."""
    init_stack(project, "open")
    # The dev stack's settings (as a user would copy them) beside the stack's own encrypted secrets.
    document = yaml.safe_load(project.stack_file("open").read_text())
    committed = yaml.safe_load(deployable((ROOT / "Pulumi.dev.yaml").read_text()))["config"]
    document["config"] = {**committed, **document["config"]}
    project.stack_file("open").write_text(yaml.safe_dump(document, sort_keys=False))
    project.pulumi("config", "set", "--path", "resinfra:adminCidrs[0]", "0.0.0.0/0", stack="open")
    project.pulumi("config", "set", "resinfra:allowSshFromAnywhere", "true", stack="open")
    done = project.pulumi("preview", "--policy-pack", pack, stack="open", check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "no-public-admin-ports" in output
    assert "opens SSH (22) to 0.0.0.0/0: allow admin ports only from resinfra:adminCidrs or the supernet" in output
