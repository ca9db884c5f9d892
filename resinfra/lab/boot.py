"""How a lab machine boots: from its rendered cloud-init user-data, the files it writes and the services its ``runcmd`` starts.

A cloud VM boots with the program's user-data; a lab machine "boots" with the same text:
the lab writes its ``write_files`` under the machine's directory and starts the services
``runcmd`` starts, with the command lines of their units (rendered units from
``write_files``, the Debian package's unit otherwise). A service the lab does not know
is an error, so a new one cannot slip past the lab unnoticed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from resinfra.lab.changes import machine_path
from resinfra.monitoring_local import node_exporter_argv
from resinfra.render.cloud_init import NODE_EXPORTER_UNIT

SYSTEMD_DIR = "/etc/systemd/system"
NODE_EXPORTER_DEFAULTS = f"/etc/default/{NODE_EXPORTER_UNIT}"
"""The Debian unit runs ``/usr/bin/prometheus-node-exporter $ARGS`` with this environment file; the user-data sets ARGS."""
NOT_EMULATED = {"ssh": "no SSH in the lab: what the program pushes over SSH is written as files"}
"""Units the user-data starts that the lab leaves out, and why."""


class BootError(ValueError):
    """User-data the lab cannot boot a machine from."""


@dataclass(frozen=True)
class Service:
    """A systemd service the machine runs at boot."""

    unit: str
    commands: tuple[tuple[str, ...], ...]
    """Its ``ExecStart`` command lines: one for a daemon, one or more for a oneshot (run in order)."""
    oneshot: bool = False
    """Runs to completion at boot (routes); otherwise a long-running daemon."""

    @property
    def argv(self) -> tuple[str, ...]:
        """A daemon's command line."""
        return self.commands[0]


@dataclass(frozen=True)
class Boot:
    """What a machine's user-data does that the lab reproduces."""

    files: tuple[tuple[Path, str], ...]
    """(where the lab writes it, content) for every ``write_files`` entry."""
    services: tuple[Service, ...]


def _units_started(runcmd: list[list[str]]) -> list[str]:
    """Units a ``runcmd`` starts (``systemctl restart|start U`` or ``systemctl enable --now U``), in order, once each."""
    started: list[str] = []
    for command in runcmd:
        if len(command) < 3 or command[0] != "systemctl":
            continue
        verb, args = command[1], command[2:]
        if verb in ("restart", "start") or (verb == "enable" and "--now" in args):
            started += [a.removesuffix(".service") for a in args if not a.startswith("-")]
    return list(dict.fromkeys(started))


def _unit_lines(unit_text: str, key: str) -> list[str]:
    """Values of ``key=`` in a unit file, with ``\\`` line continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", unit_text)
    return [line.split("=", 1)[1].strip() for line in joined.splitlines() if line.startswith(f"{key}=")]


def _shell_variable(text: str, name: str) -> list[str]:
    """The words of ``NAME="..."`` in an environment file (as systemd splits ``$NAME``)."""
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 1 and words[0].startswith(f"{name}="):
            return shlex.split(words[0].split("=", 1)[1])
    raise BootError(f"no {name}= in the environment file")


def _relocate(argv: list[str], files: dict[str, Path]) -> tuple[str, ...]:
    """The command line with every path the user-data wrote (``--config.file=/etc/...``) moved to where the lab wrote it."""
    out = []
    for arg in argv:
        flag, sep, value = arg.partition("=")
        if sep and value in files:
            out.append(f"{flag}={files[value]}")
        else:
            out.append(str(files.get(arg, arg)))
    return tuple(out)


def boot_plan(machine: str, user_data: str, machine_root: Path) -> Boot:
    """The files and services of ``machine`` from its user-data (``#cloud-config`` YAML, as the program renders it).

    + machine: its name (for error messages)
    + user_data: the rendered user-data
    + machine_root: the machine's directory in the lab; ``/etc/x`` is written to ``machine_root/etc/x``

    Example: a prober worker's user-data gives node_exporter on ``10.10.16.10:9100`` and
    blackbox_exporter with ``--config.file=<machine_root>/etc/prometheus/blackbox.yml``.
    """
    document = yaml.safe_load(user_data) or {}
    written = {f["path"]: f["content"] for f in document.get("write_files") or []}
    files = {path: machine_path(machine_root, path) for path in written}
    services = []
    for unit in _units_started(document.get("runcmd") or []):
        if unit in NOT_EMULATED:
            continue
        rendered = written.get(f"{SYSTEMD_DIR}/{unit}.service")
        if rendered is not None:
            starts = tuple(_relocate(shlex.split(line), files) for line in _unit_lines(rendered, "ExecStart"))
            oneshot = "oneshot" in _unit_lines(rendered, "Type")
            if not starts or (len(starts) > 1 and not oneshot):
                raise BootError(f"{machine}: unit {unit} has {len(starts)} ExecStart lines")
            services.append(Service(unit, starts, oneshot))
        elif unit == NODE_EXPORTER_UNIT:
            if NODE_EXPORTER_DEFAULTS not in written:
                raise BootError(f"{machine}: user-data starts {unit} without writing {NODE_EXPORTER_DEFAULTS} (its listen address)")
            services.append(Service(unit, (tuple(node_exporter_argv(*_shell_variable(written[NODE_EXPORTER_DEFAULTS], "ARGS"))),)))
        else:
            raise BootError(f"{machine}: user-data starts {unit}, which the lab cannot run; teach resinfra/lab/boot.py how")
    return Boot(tuple((files[path], content) for path, content in written.items()), tuple(services))
