"""``resinfra heal`` (the service) and ``resinfra heal simulate`` (the what-if)."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

# The service's modules (Tornado, SQLite, pydantic, the Automation API) load in the command that runs it: every
# `resinfra` command builds this parser, and `resinfra lab ...` must not pay for them.
if TYPE_CHECKING:
    from resinfra.healer.receiver import Receiver
    from resinfra.healer.service import Healer

EXIT_USAGE = 2
DEFAULT_SETTINGS = "/etc/resinfra-healer/healer.json"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], stack_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``heal`` and ``heal simulate`` to the ``resinfra`` command."""
    heal = sub.add_parser("heal", help="run the healer service (on the tooling VM), or `heal simulate` to replay the policy on recorded alerts")
    heal.add_argument("--settings", default=DEFAULT_SETTINGS, help=f"the healer's settings file (default {DEFAULT_SETTINGS})")
    heal.add_argument("--inventory", help="read machines from this file (pulumi stack output inventory --json) instead of the stack")
    heal.add_argument(
        "--action-command",
        help="replace machines by running this local command (RESINFRA_MACHINE, _SITE, _ROLE, _URN in its environment) instead of pulumi up",
    )
    heal.add_argument("--dry-run", action="store_true", help="log decisions, replace nothing (overrides the settings)")
    heal.set_defaults(func=cmd_heal)
    heal_sub = heal.add_subparsers(dest="heal_command")
    sim = heal_sub.add_parser("simulate", help="replay the policy on an inventory and recorded Alertmanager payloads; prints every decision, does nothing")
    sim.add_argument("--inventory", required=True, help="JSON as `pulumi stack output inventory --json` prints it (optional `created` per machine)")
    sim.add_argument("--alerts", required=True, help='JSON list of {"receivedAt": RFC 3339, "payload": <Alertmanager webhook body>} in time order')
    sim.add_argument("--json", action="store_true", help="machine-readable output")
    sim.add_argument("--repair-seconds", type=float, help="how long a simulated repair takes (default 300)")
    stack_args(sim)
    sim.set_defaults(func=cmd_simulate)
    ack = heal_sub.add_parser(
        "acknowledge-journal",
        help="after the healer refused a missing, truncated or corrupt journal (exit 2): move its files aside so it starts afresh",
        description="Run only after checking the stack's recent updates (pulumi stack history): the healer no longer knows what it replaced.",
    )
    ack.add_argument("--settings", default=DEFAULT_SETTINGS, help=f"the healer's settings file (default {DEFAULT_SETTINGS})")
    ack.set_defaults(func=cmd_acknowledge_journal)


def cmd_simulate(args: argparse.Namespace) -> int:
    from resinfra.cli import stack_config_from
    from resinfra.healer.alerts import PayloadError
    from resinfra.healer.inventory import InventoryError, load_inventory
    from resinfra.healer.settings import policy_settings
    from resinfra.healer.simulate import DEFAULT_REPAIR_SECONDS, format_steps, parse_arrivals, simulate, steps_json

    _, cfg = stack_config_from(args.config_file or args.stack or "dev")
    try:
        # Each file's problem names the file: the two are easily swapped on a command line.
        source = f"--inventory {args.inventory}"
        inventory = load_inventory(Path(args.inventory).read_text())
        source = f"--alerts {args.alerts}"
        arrivals = parse_arrivals(_json_file(Path(args.alerts)))
        steps = simulate(
            inventory, arrivals, policy_settings(cfg.healer), repair_seconds=DEFAULT_REPAIR_SECONDS if args.repair_seconds is None else args.repair_seconds
        )
    except (InventoryError, PayloadError, OSError) as err:
        print(f"resinfra heal simulate: {source}: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(steps_json(steps) if args.json else format_steps(steps))
    return 0


def _json_file(path: Path) -> object:
    from resinfra.healer.alerts import PayloadError

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PayloadError(f"not JSON: {err}") from None


def cmd_acknowledge_journal(args: argparse.Namespace) -> int:
    from resinfra.healer.journal import acknowledge
    from resinfra.healer.settings import load_settings

    try:
        settings = load_settings(args.settings)
    except (ValueError, OSError) as err:
        print(f"resinfra heal acknowledge-journal: {err}", file=sys.stderr)
        return EXIT_USAGE
    moved = acknowledge(settings.journal, time.time())
    for path in moved:
        print(f"kept as {path}")
    print(f"the journal {settings.journal} is acknowledged: the healer starts with a new one (restart it: systemctl restart resinfra-healer)")
    return 0


def build_healer(args: argparse.Namespace) -> tuple[Healer, Receiver]:
    """The service from its settings file and the command line (raises PulumiCliMissing before anything starts)."""
    from resinfra.healer.act import CommandActuator, PulumiActuator, StackRef, require_pulumi_cli
    from resinfra.healer.journal import Journal
    from resinfra.healer.observe import AuditLog, Metrics, Notifier
    from resinfra.healer.receiver import Receiver
    from resinfra.healer.service import FileInventory, Healer, InventorySource, StackInventory
    from resinfra.healer.settings import load_settings, policy_settings, read_environment_file, read_secret_file

    if not args.action_command:
        # First of all: without the CLI the Automation API fails only at the first repair.
        require_pulumi_cli()
    settings = load_settings(args.settings)
    policy = policy_settings(settings.policy, settings.settle_seconds)
    if args.dry_run:
        policy = replace(policy, dry_run=True)
    inventory: InventorySource
    if args.action_command:
        if not args.inventory:
            raise ValueError("--action-command needs --inventory: a local action has no stack to read machines from")
        actuator: CommandActuator | PulumiActuator = CommandActuator(shlex.split(args.action_command))
        inventory = FileInventory(Path(args.inventory))
    else:
        if settings.stack is None:
            raise ValueError(f"{args.settings} names no stack; give --action-command and --inventory for a local action")
        ref = StackRef(settings.stack.name, settings.stack.project_dir, settings.stack.backend_url, read_environment_file(settings.environment_file))
        actuator = PulumiActuator(ref)
        inventory = FileInventory(Path(args.inventory)) if args.inventory else StackInventory(ref)
    token = read_secret_file(settings.token_file)
    if not token:
        raise ValueError(f"{settings.token_file} holds no token")
    metrics = Metrics()
    journal = Journal(settings.journal)  # JournalDamaged: the caller refuses to start
    healer = Healer(
        policy,
        inventory,
        actuator,
        journal,
        AuditLog(settings.audit_log),
        metrics,
        Notifier(read_secret_file(settings.notification_url_file)),
        repair_timeout=settings.policy.repair_timeout_seconds,
        alert_ttl=settings.alert_ttl_seconds,
        tick=settings.tick_seconds,
        inventory_refresh=settings.inventory_refresh_seconds,
    )
    receiver = Receiver(settings.listen_host, settings.listen_port, token, healer.submit, metrics, health=healer.health)
    return healer, receiver


EXIT_JOURNAL_DAMAGED = 2
"""The unit's ``RestartPreventExitStatus``: systemd does not restart a healer that refused its journal."""
EXIT_EARLIER_ACTION = 3
"""An earlier process's action still runs: systemd restarts the healer after ``RestartSec`` (so it waits again)."""


def cmd_heal(args: argparse.Namespace) -> int:
    from resinfra.healer.act import PulumiCliMissing
    from resinfra.healer.journal import JournalDamaged
    from resinfra.healer.service import EarlierActionRunning

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        healer, receiver = build_healer(args)
    except PulumiCliMissing as err:
        print(f"resinfra heal: refusing to start: {err}", file=sys.stderr)
        return EXIT_USAGE
    except JournalDamaged as err:
        print(f"resinfra heal: refusing to act: {err}", file=sys.stderr)
        return EXIT_JOURNAL_DAMAGED
    except (ValueError, OSError) as err:
        print(f"resinfra heal: {err}", file=sys.stderr)
        return EXIT_USAGE
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        healer.start()
    except EarlierActionRunning as err:
        print(f"resinfra heal: {err}", file=sys.stderr)
        return EXIT_EARLIER_ACTION
    receiver.start()
    print(f"resinfra healer listening on {receiver.host}:{receiver.port}", flush=True)
    stopping.wait()
    receiver.stop()
    if healer.repairing:
        print("resinfra heal: stopping during a repair: its action is interrupted (SIGINT), waiting for it to finish what it started", file=sys.stderr)
    # Within the unit's TimeoutStopSec (300 s): what is still running then is killed.
    healer.stop(repair_grace=240)
    return 0
