"""The ``resinfra`` command: plan and render a stack offline."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

# The program, its SDKs and pydantic load only in the commands that need them (about a CPU second): `resinfra lab
# partition` or `resinfra heal` must not pay for `resinfra plan`'s imports.
if TYPE_CHECKING:
    from resinfra import config
    from resinfra.offline import OfflineRun

EXIT_BAD_CONFIG = 2


class StackFileError(Exception):
    """The stack file is missing or unreadable."""


def project_dir(start: Path | None = None) -> Path:
    """The directory holding the resinfra ``Pulumi.yaml``: from ``start`` upwards, else the checkout this package is in."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        project = candidate / "Pulumi.yaml"
        if project.is_file() and (yaml.safe_load(project.read_text()) or {}).get("name") == "resinfra":
            return candidate
    return Path(__file__).resolve().parent.parent


def stack_file(stack: str | None, config_file: str | None) -> tuple[str, Path]:
    """Resolve ``--stack``/``--config-file`` to (stack name, file path)."""
    if config_file:
        path = Path(config_file)
        name = path.stem.removeprefix("Pulumi.") if path.name.startswith("Pulumi.") else (stack or "dev")
        return name, path
    name = stack or "dev"
    return name, project_dir() / f"Pulumi.{name}.yaml"


def read_stack_config(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The ``config:`` map of a stack file, with ``secure:`` values replaced by placeholders.

    Returns the values and the keys that were secret.
    """
    from resinfra.config import plaintext_secret_warnings
    from resinfra.offline import placeholder_for

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise StackFileError(f"{path}: no such stack file; pass --stack NAME (reads Pulumi.NAME.yaml) or --config-file PATH") from None
    except yaml.YAMLError as err:
        raise StackFileError(f"{path}: not valid YAML: {err}") from None
    values = document.get("config") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise StackFileError(f"{path}: has no 'config:' map of stack settings")
    for warning in plaintext_secret_warnings(values):
        print(f"resinfra: warning: {warning}", file=sys.stderr)
    secret_keys = []
    for key, value in list(values.items()):
        if _is_secure(value):
            # Never decrypted offline: the run gets a placeholder.
            values[key] = placeholder_for(key)
            secret_keys.append(key)
        elif _holds_secure(value):
            # `pulumi config set --secret --path key.sub`: the secret leaves get placeholders.
            values[key] = _replace_secure(value)
            secret_keys.append(key)
    return values, secret_keys


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def _holds_secure(value: Any) -> bool:
    if _is_secure(value):
        return True
    if isinstance(value, dict):
        return any(_holds_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_secure(v) for v in value)
    return False


def _replace_secure(value: Any) -> Any:
    from resinfra.offline import OFFLINE_SECRET_PLACEHOLDER

    if _is_secure(value):
        return OFFLINE_SECRET_PLACEHOLDER
    if isinstance(value, dict):
        return {k: _replace_secure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_secure(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# plan


def plan_report(run: OfflineRun, stack: str, source: Path, seconds: float) -> dict[str, Any]:
    """The data ``resinfra plan`` prints (as text or ``--json``)."""
    from resinfra import cost

    cfg = run.config
    components = []
    for comp in (r for r in run.resources if r.type.startswith("resinfra:")):
        children = [r for r in run.resources if r.custom and run.descends_from(r, comp)]
        components.append(
            {
                "type": comp.type,
                "name": comp.name,
                "resourceCount": len(children),
                "countsByType": dict(sorted(Counter(r.type for r in children).items())),
                "resources": [{"type": r.type, "name": r.name} for r in children],
            }
        )
    custom = [r for r in run.resources if r.custom]
    return {
        "stack": stack,
        "configFile": str(source),
        "offline": True,
        "placeholderSecrets": run.placeholders,
        "refusedByDeployment": [problem_row(p) for p in run.refused],
        "placeholderNotes": [problem_row(p) for p in run.placeholder_notes],
        "seconds": round(seconds, 2),
        "supernet": cfg.supernet,
        "sitePrefixLength": cfg.site_prefix_length,
        "sites": [
            {
                "name": s.name,
                "provider": str(s.provider),
                "number": s.number,
                "block": str(run.result.plan[s.name].block),
                "subnet": str(run.result.plan[s.name].subnet),
                "gatewaySubnet": str(run.result.plan[s.name].gateway_subnet),
                "gateway": run.outputs["sites"][s.name]["gateway"],
                "tunnelAddresses": tunnel_addresses(run.outputs["tunnels"], s.name),
                "workers": s.workers,
            }
            for s in cfg.sites
        ],
        "images": image_rows(run),
        "machines": run.outputs["inventory"],
        "tunnels": run.outputs["tunnels"],
        "components": components,
        "resourceCount": len(custom),
        "countsByType": dict(sorted(Counter(r.type for r in custom).items())),
        "cost": cost.cost_report(cost.estimate(cfg)),
        "gatewayPairsCost": {site: round(amount, 2) for site, amount in cost.gateway_pairs_cost(cfg).items()},
    }


def tunnel_addresses(tunnels: list[dict[str, Any]], site: str) -> dict[str, list[str]]:
    """Every public address ``site``'s tunnel ends use, with the kinds of link that use it.

    Not only the gateway's: a GCP site meets strongSwan sites on its Classic VPN gateway's own address.
    """
    out: dict[str, list[str]] = {}
    for tunnel in tunnels:
        for end in tunnel["ends"]:
            if end["site"] == site:
                for ip in end["publicIps"]:
                    kinds = out.setdefault(ip, [])
                    if tunnel["kind"] not in kinds:
                        kinds.append(tunnel["kind"])
    return out


def gateway_addresses(site: dict[str, Any]) -> str:
    """The address plan's cell: the gateway's public addresses, then any other address its tunnels use (a Classic VPN's)."""
    own = site["gateway"]["publicIps"]
    others = [
        f"{ip} ({'Classic VPN' if any('classic' in k for k in kinds) else ', '.join(kinds)})" for ip, kinds in site["tunnelAddresses"].items() if ip not in own
    ]
    return ", ".join([*own, *others])


def problem_row(problem: config.Problem) -> dict[str, str]:
    return {"key": problem.key, "message": problem.message, "fix": problem.fix}


def format_placeholders(refused: list[dict[str, str]], notes: list[dict[str, str]]) -> list[str]:
    """The warning about placeholder values: what a real deployment refuses, and what it accepts but cannot use."""
    lines = []
    if refused:
        lines += [
            f"REFUSED BY A REAL DEPLOYMENT: {len(refused)} placeholder value{'s' if len(refused) > 1 else ''}. "
            "This offline run goes on with them; `pulumi preview`/`up` stops on them:",
            *(f"  - {r['key']}: {r['message']}. Fix: {r['fix']}." for r in refused),
        ]
    if notes:
        lines += [
            "Placeholders a real deployment accepts but cannot use:",
            *(f"  - {n['key']}: {n['message']}. Fix: {n['fix']}." for n in notes),
        ]
    return lines


def image_rows(run: OfflineRun) -> list[dict[str, str]]:
    """Per site and role: the image mode, how the image is named to the provider, and the role's provisioning digest."""
    from resinfra import images

    return [
        {
            "site": site,
            "role": role.value,
            "mode": image.mode.value,
            "source": image.source.value,
            "image": image.reference,
            "userData": "full" if image.full_user_data else "machine only",
            "provisioning": images.source_digest(role),
        }
        for site, roles in run.result.images.items()
        for role, image in roles.items()
    ]


def image_mode(row: dict[str, str]) -> str:
    """The mode, and how the image is found when that says more than the mode (``packer (gce-image-family)``, ``stock (override)``)."""
    return row["mode"] if row["source"] == row["mode"] else f"{row['mode']} ({row['source']})"


def format_plan(report: dict[str, Any]) -> str:
    """Human-readable plan."""
    lines = [
        f"resinfra plan: stack {report['stack']} ({report['configFile']})",
        f"offline under Pulumi mocks in {report['seconds']} s: no cloud was contacted; public addresses from 100.64.0.0/10 are placeholders",
        "",
    ]
    warning = format_placeholders(report["refusedByDeployment"], report["placeholderNotes"])
    lines += [*warning, ""] if warning else []
    lines += [
        f"Address plan: supernet {report['supernet']}, one /{report['sitePrefixLength']} block per site",
    ]
    rows = [("site", "provider", "no", "block", "worker subnet", "gateway", "gateway public", "gateway VMs", "workers")]
    for s in report["sites"]:
        gw = s["gateway"]
        vms = ", ".join(gw.get("vms", [])) or "-"
        rows.append((s["name"], s["provider"], str(s["number"]), s["block"], s["subnet"], gw["kind"], gateway_addresses(s), vms, str(s["workers"])))
    lines += _table(rows)
    currency = report["cost"]["currency"]
    lines += [
        f"Gateway pair of {site}: both VMs share {next(s['gateway']['publicIps'][0] for s in report['sites'] if s['name'] == site)}"
        f" (the address every peer uses); the pair adds {amount:,.2f} {currency}/month"
        for site, amount in report["gatewayPairsCost"].items()
    ]
    lines += ["", "Images (mode stock: Ubuntu 24.04 + full user-data; packer: images/ + the machine's own user-data)"]
    rows = [("site", "role", "mode", "image", "user-data", "provisioning")]
    rows += [(i["site"], i["role"], image_mode(i), i["image"], i["userData"], i["provisioning"]) for i in report["images"]]
    lines += _table(rows)
    lines += ["", "Machines"]
    rows = [("name", "site", "role", "private", "public")]
    rows += [(m["name"], m["site"], m["role"], m["privateIp"], m["publicIp"]) for m in report["machines"]]
    lines += _table(rows)
    lines += ["", f"Tunnels: {len(report['tunnels'])} links, {sum(t['tunnels'] for t in report['tunnels'])} tunnels (one link per pair of sites)"]
    rows = [("pair", "kind", "routing", "tunnels", "crypto", "endpoints")]
    for t in report["tunnels"]:
        ends = " <-> ".join(f"{e['site']} {'/'.join(e['publicIps'])}" for e in t["ends"])
        rows.append((t["name"], t["kind"], t["routing"], str(t["tunnels"]), t["crypto"], ends))
    lines += _table(rows)
    lines += ["", f"Resources: {report['resourceCount']}, by component"]
    for comp in report["components"]:
        lines.append(f"  {comp['type']} {comp['name']} ({comp['resourceCount']})")
        for typ, count in comp["countsByType"].items():
            lines.append(f"    {count:4d}  {typ}")
    lines += ["", *format_cost_report(report["cost"])]
    return "\n".join(lines)


def format_cost_report(report: dict[str, Any]) -> list[str]:
    """Text of a :func:`resinfra.cost.cost_report`: per site and line, then the total."""
    cur = report["currency"]
    lines = [f"Estimated monthly cost ({cur}, {report['hoursPerMonth']:g} h/month, egress {report['egressGbPerMonth']:g} GB/month per site)"]
    for site in report["sites"]:
        lines.append(f"  {site['site']} ({site['provider']}, {site['region']}): {site['monthly']:,.2f} {cur}")
        for line in site["lines"]:
            amount = "unpriced" if line["unpriced"] else f"{line['monthly']:,.2f}"
            lines.append(f"    {amount:>10}  {line['category']:16s} {line['description']}")
    lines.append(f"  total: {report['monthlyTotal']:,.2f} {cur} per month")
    lines += [f"  not in the total: {missing}" for missing in report["unpriced"]]
    lines.append(f"  {report['notice']}")
    return lines


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def run_stack(args: argparse.Namespace) -> tuple[OfflineRun, str, Path, float]:
    """Read the stack file and run the program offline. Raises StackFileError/ConfigError."""
    from resinfra.offline import run_offline

    stack, path = stack_file(args.stack, args.config_file)
    values, secret_keys = read_stack_config(path)
    started = time.perf_counter()

    run = run_offline(values, stack_name=stack, secret_keys=secret_keys)
    return run, stack, path, time.perf_counter() - started


def cmd_plan(args: argparse.Namespace) -> int:
    run, stack, path, seconds = run_stack(args)
    report = plan_report(run, stack, path, seconds)
    print(json.dumps(report, indent=2) if args.json else format_plan(report))
    return 0


def write_with_mode(path: Path, content: str, mode: int) -> None:
    """Write ``path`` as a new file that has ``mode`` before it holds a byte, then move it into place.

    Writing first and chmod-ing after leaves a window in which a secret is readable by others
    (a new file gets 0666 less the umask); an existing file keeps its old mode when rewritten.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; while empty it was never wider than 0600
        data = content.encode()
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)
    tmp.replace(path)


RENDER_MANIFEST = ".resinfra-render"
"""What ``render`` wrote into ``--out`` (one relative path a line): the next render into it removes what it no longer writes."""


class OutputDirError(Exception):
    """``render --out`` names a directory render cannot take over."""


def previous_render(out: Path) -> list[str]:
    """The files an earlier render wrote into ``out``; refuses a directory holding anything else (a stale machine's
    folder would sit beside the new ones, unnoticed)."""
    manifest = out / RENDER_MANIFEST
    if manifest.is_file():
        # Only plain relative paths: an edited list cannot make render remove anything outside ``out``.
        return [name for name in manifest.read_text().splitlines() if name and not Path(name).is_absolute() and ".." not in Path(name).parts]
    if out.is_dir() and any(out.iterdir()):
        found = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise OutputDirError(
            f"--out {out}: holds files resinfra render did not write ({found}). Fix: name an empty or new directory; "
            f"render lists what it writes in {RENDER_MANIFEST} there, and a later render into it removes what it no longer writes."
        )
    return []


def remove_stale(out: Path, stale: list[str]) -> None:
    """Remove files of an earlier render that this one did not write, then the folders they leave empty."""
    for name in stale:
        (out / name).unlink(missing_ok=True)
    for folder in sorted({(out / name).parent for name in stale}, key=lambda p: len(p.parts), reverse=True):
        while folder != out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def cmd_render(args: argparse.Namespace) -> int:
    run, _, _, _ = run_stack(args)
    warning = format_placeholders([problem_row(p) for p in run.refused], [problem_row(p) for p in run.placeholder_notes])
    if warning:
        print("\n".join(warning), file=sys.stderr)
    out = Path(args.out)
    earlier = previous_render(out)
    written = []
    for f in run.files:
        target = out / f.machine / f.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        # Files holding secrets (PSKs, tokens) are readable by the owner only, from their first byte.
        write_with_mode(target, f.content, 0o600 if f.secret else 0o644)
        written.append(target.relative_to(out).as_posix())
        print(f"{f.purpose:12s} {target}")
    stale = sorted(set(earlier) - set(written))
    remove_stale(out, stale)
    (out / RENDER_MANIFEST).write_text("".join(f"{name}\n" for name in written))
    print(f"{len(written)} files written to {out}")
    if stale:
        print(f"removed {len(stale)} files no longer rendered (an earlier render's): {', '.join(stale)}")
    return 0


def stack_config_from(ref: str) -> tuple[str, config.StackConfig]:
    """A stack config from a file path or a stack name (``Pulumi.NAME.yaml`` in the project),
    validated; secrets are never read (placeholders)."""
    from resinfra import config
    from resinfra.offline import with_secret_placeholders

    path = Path(ref)
    stack, path = stack_file(None, ref) if path.is_file() else stack_file(ref, None)
    values, _ = read_stack_config(path)
    values, _, _ = with_secret_placeholders(values, None)
    return stack, config.load(values)


def cmd_cost(args: argparse.Namespace) -> int:
    from resinfra import cost

    _, base_cfg = stack_config_from(args.base)
    _, head_cfg = stack_config_from(args.head)
    report = cost.diff_report(cost.estimate(base_cfg), cost.estimate(head_cfg), args.base, args.head)
    print(json.dumps(report, indent=2) if args.json else cost.format_diff(report, markdown=args.markdown))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resinfra", description="Plan, render and operate a resinfra stack.")
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_args(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--stack", help="stack name: reads Pulumi.NAME.yaml from the project (default: dev)")
        group.add_argument("--config-file", help="a stack file (Pulumi.<stack>.yaml format) anywhere")

    plan = sub.add_parser("plan", help="run the program offline and show the address plan and every resource it would create")
    stack_args(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=cmd_plan)

    render = sub.add_parser("render", help="write every file the program boots machines with or pushes to them")
    stack_args(render)
    render.add_argument("--out", required=True, help="directory to write into (one folder per machine)")
    render.set_defaults(func=cmd_render)

    diff = sub.add_parser("cost", help="estimated monthly cost difference between two stack configs (an estimate from resinfra/prices.yaml)")
    diff.add_argument("--base", required=True, help="the config before the change: a stack file path or a stack name")
    diff.add_argument("--head", required=True, help="the config after the change: a stack file path or a stack name")
    output = diff.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output")
    output.add_argument("--markdown", action="store_true", help="a Markdown table (what the pull-request workflow posts)")
    diff.set_defaults(func=cmd_cost)

    from resinfra.healer import cli as heal_cli

    heal_cli.add_parser(sub, stack_args)

    from resinfra.lab import cli as lab_cli

    lab_cli.add_parser(sub, stack_args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as err:
        from resinfra.config import ConfigError

        if not isinstance(err, (ConfigError, StackFileError, OutputDirError)):
            raise
        print(f"resinfra: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG


if __name__ == "__main__":
    sys.exit(main())
