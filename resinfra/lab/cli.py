"""``resinfra lab``: up, status, kill, partition, heal, kill-instance, revive-instance, restart-healer, replace, down."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence

from resinfra.lab.names import LAB_NAME, NAME_PATTERN, STATE_ROOT

EXIT_FAILED = 1
EXIT_USAGE = 2
MACHINE_ENV = "RESINFRA_MACHINE"
"""Set by the healer's local action (``resinfra heal --action-command``): the machine to replace."""


def lab_name(text: str) -> str:
    if not re.fullmatch(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r}: 1-6 lowercase letters or digits, starting with a letter (it prefixes every namespace)")
    return text


def workers(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 20:
        raise argparse.ArgumentTypeError(f"{text!r}: between 1 and 20 workers per site")
    return int(text)


def add_commands(lab: argparse.ArgumentParser, stack_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``lab`` subcommands on ``lab`` (its own parser, or ``resinfra lab``)."""
    commands = lab.add_subparsers(dest="lab_command", required=True)
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument(
        "--name",
        type=lab_name,
        default=LAB_NAME,
        help=f"the lab's name: prefix of its namespaces, state in {STATE_ROOT}/NAME (default {LAB_NAME})",
    )

    up = commands.add_parser("up", parents=[named], help="run the stack offline and bring the whole cluster up on this machine (root)")
    stack_args(up)
    up.add_argument("--workers", type=workers, help="workers per site (default: as the stack configures); the program runs with this many")
    up.set_defaults(lab_func=cmd_up)

    status = commands.add_parser("status", parents=[named], help="tunnels, scrape targets, firing alerts and the healer's latest decisions")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(lab_func=cmd_status)

    kill = commands.add_parser("kill", parents=[named], help="kill a machine as a crash would (its processes and its network)")
    kill.add_argument("machine", help="a machine of the inventory, e.g. ri-dev-gcp-worker-1 (see lab status)")
    kill.set_defaults(lab_func=cmd_kill)

    for verb, helptext in (("partition", "cut a site's uplink: its gateway loses the underlay"), ("heal", "restore a site's uplink")):
        sub = commands.add_parser(verb, parents=[named], help=helptext)
        sub.add_argument("site", help="a site name of the stack")
        sub.set_defaults(lab_func=cmd_partition if verb == "partition" else cmd_heal)

    for verb, helptext in (
        ("kill-instance", "kill a cloud's gateway instance (Azure active-active: instance 0 or 1): its tunnels and BGP go"),
        ("revive-instance", "bring a killed gateway instance back"),
    ):
        sub = commands.add_parser(verb, parents=[named], help=helptext)
        sub.add_argument("site", help="the cloud's site name, e.g. azure")
        sub.add_argument("instance", type=int, help="the instance's index (0 or 1)")
        sub.set_defaults(lab_func=cmd_kill_instance if verb == "kill-instance" else cmd_revive_instance)

    restart = commands.add_parser("restart-healer", parents=[named], help="restart the healer (SIGTERM: a running repair finishes first)")
    restart.add_argument("--crash", action="store_true", help="kill it (SIGKILL) with the repair it is running, as a crash would")
    restart.set_defaults(lab_func=cmd_restart_healer)

    replace = commands.add_parser("replace", parents=[named], help="replace a machine as pulumi up --replace would (the lab healer's action)")
    replace.add_argument("machine", nargs="?", help=f"the machine (default: ${MACHINE_ENV}, which the healer sets)")
    replace.set_defaults(lab_func=cmd_replace)

    down = commands.add_parser("down", parents=[named], help="stop everything the lab started and remove its namespaces (safe to run twice)")
    down.set_defaults(lab_func=cmd_down)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], stack_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``lab`` to the ``resinfra`` command."""
    lab = sub.add_parser("lab", help="the whole cluster (mesh, monitoring, healer) on this machine in network namespaces (root)")
    add_commands(lab, stack_args)
    lab.set_defaults(func=run)


def cmd_up(args: argparse.Namespace) -> int:
    from resinfra.lab.cluster import up

    up(args.name, args.stack, args.config_file, args.workers)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from resinfra.lab.status import format_status, status_report

    report = status_report(args.name)
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from resinfra.lab.actions import kill

    machine = kill(args.name, args.machine)
    print(f"killed {machine.name} ({machine.role.value} on {machine.site}): its processes are gone and its network is down")
    if machine.paired:
        print(takeover(args.name, machine.site))
    return 0


def takeover(name: str, site: str, timeout: float = 30) -> str:
    """Which gateway of ``site``'s pair took over after a kill (waited for while the partner lives)."""
    from resinfra.lab.pairs import active_member
    from resinfra.lab.preconditions import root_of
    from resinfra.lab.state import load
    from resinfra.netlab import LabError, wait_for

    if all(m.dead for m in load(root_of(name)).machines.values() if m.paired and m.site == site):
        return f"{site}: both gateways are dead: the site is cut off (for the healer, a partition)"
    try:
        took = wait_for(lambda: active_member(load(root_of(name)), site) is not None, timeout, "the other gateway active", interval=0.2)
    except LabError:
        return f"{site}: no gateway took over within {timeout:g} s; see lab status"
    other = active_member(load(root_of(name)), site)
    return (
        f"{site}: {other.name if other else '?'} is the active gateway now ({took:.1f} s after the kill): it holds the shared address and carries the tunnels"
    )


def cmd_partition(args: argparse.Namespace) -> int:
    from resinfra.lab.actions import set_partition

    set_partition(args.name, args.site, True)
    print(f"site {args.site} is cut off: its gateway has no uplink (lab heal {args.site} restores it)")
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    from resinfra.lab.actions import set_partition

    set_partition(args.name, args.site, False)
    print(f"site {args.site}'s uplink is restored")
    return 0


def cmd_kill_instance(args: argparse.Namespace) -> int:
    from resinfra.lab.actions import set_instance

    key = set_instance(args.name, args.site, args.instance, alive_=False)
    print(f"{args.site}'s gateway instance {args.instance} ({key}) is dead: its tunnels and BGP sessions are gone (lab revive-instance restores it)")
    return 0


def cmd_revive_instance(args: argparse.Namespace) -> int:
    from resinfra.lab.actions import set_instance

    key = set_instance(args.name, args.site, args.instance, alive_=True)
    print(f"{args.site}'s gateway instance {args.instance} ({key}) is back: its tunnels and BGP sessions are starting")
    return 0


def cmd_restart_healer(args: argparse.Namespace) -> int:
    from resinfra.lab.actions import restart_healer

    record = restart_healer(args.name, crash=args.crash)
    print(f"healer {'killed' if args.crash else 'stopped'} and started again (pid {record.pid})")
    return 0


def cmd_replace(args: argparse.Namespace) -> int:
    from resinfra.lab.actions import replace

    machine_name = args.machine or os.environ.get(MACHINE_ENV)
    if not machine_name:
        print(f"resinfra lab replace: name a machine (or set {MACHINE_ENV})", file=sys.stderr)
        return EXIT_USAGE
    machine = replace(args.name, machine_name)
    how = (
        f"namespace {machine.namespace} created again"
        if machine.own_namespace or machine.paired
        else "restarted in place (its namespace carries its site's network)"
    )
    how += " (one of a gateway pair: it boots as the standby)" if machine.paired else ""
    print(f"replaced {machine.name}: {how}, booted from its user-data")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from resinfra.lab.cluster import down

    down(args.name)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a lab command; a usage problem exits 2 and a lab failure 1, each with its message."""
    from resinfra.lab.preconditions import LabUsageError
    from resinfra.lab.state import LabStateError
    from resinfra.netlab import LabError

    try:
        return int(args.lab_func(args))
    except (LabUsageError, LabStateError) as err:
        text = str(err)
        print(text if text.startswith(f"resinfra lab {args.lab_command} ") else f"resinfra lab {args.lab_command}: {text}", file=sys.stderr)
        return EXIT_USAGE
    except LabError as err:
        print(f"resinfra lab {args.lab_command}: {err}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m resinfra.lab.cli``: the lab commands without importing the rest of the CLI (the healer's action uses it)."""
    parser = argparse.ArgumentParser(prog="resinfra lab")

    def stack_args(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--stack", help="stack name: reads Pulumi.NAME.yaml from the project (default: dev)")
        group.add_argument("--config-file", help="a stack file (Pulumi.<stack>.yaml format) anywhere")

    add_commands(parser, stack_args)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
