"""The README's "Deploy to real clouds" commands (its credentials and "A stack per environment" included), run as written in a
shell (the emulators stand in for the clouds), read from the README itself so the test follows it.

What differs from a user's terminal, and why: no Google Cloud, so the local backend the README
offers "to try it alone" and a passphrase (in the environment) replace ``gs://`` and
``gcpkms://``; no terminal, so confirmations are skipped by ``PULUMI_SKIP_CONFIRMATIONS``,
prompts read standard input and ``ssh-keygen`` gets ``-N ""``; the committed stack files'
documentation addresses are replaced as a user replaces them; ``file://~`` (which Pulumi
resolves from the password database, not ``$HOME``) is the test's own home directory.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.engine.harness import ROOT, Project, deployable, sentinel

README = (ROOT / "README.md").read_text()


def section(heading: str) -> str:
    start = README.index(f"\n{heading}\n")
    level = heading.split(" ")[0]
    end = re.search(rf"\n#{{1,{len(level)}}} ", README[start + len(heading) + 2 :])
    return README[start : start + len(heading) + 2 + (end.start() if end else len(README))]


def sh_blocks(text: str) -> list[list[str]]:
    """The commands of each ```sh block (one per line, comments dropped)."""
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [[line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")] for block in blocks]


def inline(text: str, starts: str) -> str:
    found = re.search(rf"`({re.escape(starts)}[^`]*)`", text)
    assert found, f"the README no longer says `{starts}...`"
    return found.group(1)


@pytest.fixture(scope="module")
def shell(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A user's shell in the project: their own HOME, no backend chosen yet, key files at hand."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "pve").write_text(sentinel("pve-ssh-key"))
    (project.dir / "key.json").write_text(json.dumps({"type": "service_account", "private_key": sentinel("gcp-key")}))
    env = {k: v for k, v in project.env.items() if k != "PULUMI_BACKEND_URL"}
    env.update(HOME=str(home), PULUMI_SKIP_CONFIRMATIONS="true")
    return Project(project.dir, env)


def run(shell: Project, command: str) -> None:
    """One README command in bash; a command that prompts for a value reads it from standard input."""
    shell.run("bash", "-c", command, stdin=sentinel("typed"))


def test_deploy_to_real_clouds(shell: Project) -> None:
    deploy = section("## Deploy to real clouds")
    # Pulumi resolves file://~ from the password database, not $HOME: the test's own home instead.
    run(shell, inline(deploy, "mkdir -p ~/.pulumi-state && pulumi login file://").replace("~", shell.env["HOME"]))
    keygen = inline(deploy, "ssh-keygen -t ed25519 -f stack-key")
    run(shell, f'{keygen} -N ""')
    run(shell, inline(deploy, "pulumi config set resinfra:sshPublicKey"))
    run(shell, inline(deploy, "pulumi config set --secret resinfra:sshPrivateKey < stack-key"))
    [commands] = [block for block in sh_blocks(deploy) if any("hcloud:token" in command for command in block)]
    for command in commands:
        run(shell, command)
    run(shell, inline(deploy, "uv run resinfra plan --stack").replace("<stack>", "dev"))
    apply = re.search(r"`(pulumi preview)` then `(pulumi up)`", deploy)
    assert apply, "the README's apply step changed"
    run(shell, apply.group(1))
    run(shell, apply.group(2))
    run(shell, "pulumi preview --expect-no-changes")


def test_a_stack_per_environment(shell: Project) -> None:
    [commands] = sh_blocks(section("### A stack per environment"))
    for command in commands:
        if command.startswith("pulumi stack init"):
            # No Cloud KMS here: the passphrase secrets provider instead.
            words = shlex.split(command)
            i = words.index("--secrets-provider")
            command = shlex.join(words[:i] + words[i + 2 :])
        run(shell, command)
        if command.startswith("cp Pulumi.dev.yaml"):
            # "then change prefix, sizes, worker counts, admin CIDRs": a new prefix, and the user's own addresses.
            target = shell.dir / command.split()[-1]
            target.write_text(deployable(target.read_text()).replace("ri-dev", "ri-prd"))
            run(shell, f"pulumi config set --secret resinfra:sshPrivateKey --stack prod < {Path('stack-key')}")
    run(shell, "pulumi preview --expect-no-changes --stack prod")
