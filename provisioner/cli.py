"""The `provision` command. Exit codes: 0 success, 1 error; with
--detailed-exitcode `plan` also returns 2 when there are changes."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from provisioner import __version__
from provisioner.errors import ProvisionError
from provisioner.secret import REGISTRY

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fail(message: str) -> None:
    click.echo(f"error: {REGISTRY.scrub(message)}", err=True)
    sys.exit(1)


def _parse_extra_vars(values: tuple[str, ...]) -> dict[str, Any]:
    from provisioner.spec.yaml_loader import load_yaml_file

    result: dict[str, Any] = {}
    for raw in values:
        if raw.startswith("@"):
            data = load_yaml_file(raw[1:])
            if not isinstance(data, dict):
                raise ProvisionError(f"{raw[1:]}: extra vars file must be a mapping")
            result.update(data)
        elif raw.lstrip().startswith("{"):
            try:
                result.update(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise ProvisionError(f"-e {raw!r}: invalid JSON: {exc.msg}") from None
        else:
            for item in raw.split():
                key, sep, value = item.partition("=")
                if not sep or not key.isidentifier():
                    raise ProvisionError(f"-e {item!r}: expected NAME=VALUE, @file or JSON")
                result[key] = value
    return result


def _load_inventory(sources: tuple[str, ...]) -> Any:
    from provisioner.inventory import load_inventory

    return load_inventory(list(sources) or None)


def _ssh_options(ctx_opts: dict[str, Any]) -> Any:
    from provisioner.connection.options import SshOptions

    return SshOptions(
        connect_timeout=ctx_opts["connect_timeout"],
        command_timeout=ctx_opts["timeout"],
        accept_new_host_keys=ctx_opts["accept_new_host_keys"],
        known_hosts=ctx_opts["known_hosts"],
    )


def common_options(func):  # type: ignore[no-untyped-def]
    options = [
        click.option("-i", "--inventory", "inventory", multiple=True, metavar="INV",
                     help="Inventory file, directory or host list (repeatable)."),
        click.option("-e", "--extra-vars", "extra_vars", multiple=True, metavar="K=V|@FILE",
                     help="Extra variables (highest precedence)."),
        click.option("-l", "--limit", default=None, metavar="PATTERN",
                     help="Only hosts matching this pattern."),
        click.option("-f", "--forks", default=64, show_default=True,
                     help="Hosts worked on in parallel."),
        click.option("--timeout", type=float, default=None, metavar="SECONDS",
                     help="Per-command timeout on hosts."),
        click.option("--connect-timeout", type=float, default=10.0, show_default=True),
        click.option("--known-hosts", default=None, metavar="FILE",
                     help="known_hosts file (default ~/.ssh/known_hosts)."),
        click.option("--accept-new-host-keys", is_flag=True,
                     help="Trust and record keys of hosts not yet in known_hosts."),
        click.option("-t", "--target", "targets", multiple=True, metavar="ADDRESS",
                     help="Only this resource (host/kind/name) and what it depends on."),
        click.option("-v", "--verbose", is_flag=True, help="Show each step and command."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class _Group(click.Group):
    """Turns an unexpected exception into one line (PROVISION_DEBUG=1 shows
    the traceback): a user should never have to read a stack."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except ProvisionError as exc:
            _fail(str(exc))
        except Exception as exc:
            if os.environ.get("PROVISION_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} "
                  "(set PROVISION_DEBUG=1 for the traceback, and please report it)")


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="provision")
def main() -> None:
    """Provision hosts, VMs and containers from declarative YAML."""


def _prepare(playbook: str, opts: dict[str, Any]):  # type: ignore[no-untyped-def]
    from provisioner.engine.runner import ordered_resources
    from provisioner.spec.loader import load_spec

    inventory = _load_inventory(opts["inventory"])
    extra = _parse_extra_vars(opts["extra_vars"])
    spec = load_spec(playbook, inventory, extra, opts["limit"])
    ordered = ordered_resources(spec)
    if opts.get("targets"):
        from provisioner.engine.runner import select_targets

        ordered = select_targets(ordered, list(opts["targets"]))
        spec.hosts = [h for h in spec.hosts if h in ordered]
        for play in spec.plays:  # a targeted run never prunes
            play.prune = False
    return inventory, spec, ordered


def _runner(inventory: Any, opts: dict[str, Any]):  # type: ignore[no-untyped-def]
    from provisioner.engine.runner import Runner, RunOptions
    from provisioner.ui.progress import make_progress

    if opts["verbose"]:
        from provisioner.log import enable_command_log

        enable_command_log()
    options = RunOptions(forks=opts["forks"], ssh=_ssh_options(opts),
                         command_timeout=opts["timeout"],
                         lock_wait=opts.get("lock_wait") or 0.0)
    return Runner(inventory, options, make_progress(opts["verbose"]))


@main.command(context_settings=CONTEXT)
@click.argument("playbook", type=click.Path(dir_okay=False))
@common_options
def validate(playbook: str, **opts: Any) -> None:
    """Load, template and validate PLAYBOOK; no host is contacted."""
    try:
        _, spec, ordered = _prepare(playbook, opts)
    except ProvisionError as exc:
        _fail(str(exc))
    click.echo(f"{playbook}: valid: {len(spec.resources)} resources on {len(spec.hosts)} hosts "
               f"in {len(spec.plays)} plays")


@main.command(context_settings=CONTEXT)
@click.argument("playbook", type=click.Path(dir_okay=False))
@common_options
@click.option("-o", "--out", default=None, metavar="FILE", help="Write the plan as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes.")
@click.option("--show-unchanged", is_flag=True, help="List unchanged resources too.")
def plan(playbook: str, out: str | None, as_json: bool, detailed_exitcode: bool,
         show_unchanged: bool, **opts: Any) -> None:
    """Read every targeted host and show what apply would change."""
    from provisioner.plan import codec
    from provisioner.ui.console import Console
    from provisioner.ui.render import render_plan

    started = time.monotonic()
    try:
        inventory, spec, ordered = _prepare(playbook, opts)
        runner = _runner(inventory, opts)
        try:
            the_plan = runner.plan(spec, ordered)
        finally:
            runner.close()
    except ProvisionError as exc:
        _fail(str(exc))
    the_plan.inventory = list(opts["inventory"])
    the_plan.limit = opts["limit"]
    text = codec.dumps(the_plan)
    if out:
        _write_file(out, text)
    if as_json:
        sys.stdout.write(text)
    else:
        console = Console()
        render_plan(console, the_plan, show_noop=show_unchanged)
        click.echo(f"({time.monotonic() - started:.2f}s"
                   + (f"; plan saved to {out}" if out else "") + ")", err=True)
    if the_plan.failed_hosts:
        sys.exit(1)
    if detailed_exitcode and the_plan.has_changes():
        sys.exit(2)


@main.command(context_settings=CONTEXT)
@click.argument("source", type=click.Path(dir_okay=False))
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--lock-wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="Wait this long for another apply's lock on a host.")
def apply(source: str, as_json: bool, **opts: Any) -> None:
    """Apply PLAYBOOK (plan and apply at once) or a saved plan.json."""
    from provisioner.engine.journal import interrupted_runs, mark_reported
    from provisioner.plan import codec
    from provisioner.ui.console import Console
    from provisioner.ui.render import render_plan
    from provisioner.ui.summary import render_interrupted, render_summary, reports_to_json

    started = time.monotonic()
    console = Console()
    for info in interrupted_runs():
        render_interrupted(Console(sys.stderr), info)
        mark_reported(info)
    saved = source.endswith(".json")
    try:
        if saved:
            with open(source, encoding="utf-8") as fh:
                the_plan = codec.loads(fh.read(), source)
            opts["inventory"] = opts["inventory"] or tuple(the_plan.inventory)
            opts["limit"] = opts["limit"] or the_plan.limit
            opts["extra_vars"] = opts["extra_vars"] or (
                (json.dumps(the_plan.extra_vars),) if the_plan.extra_vars else ())
            inventory, spec, ordered = _prepare(the_plan.spec_path, opts)
        else:
            inventory, spec, ordered = _prepare(source, opts)
        runner = _runner(inventory, opts)
        try:
            if not saved:
                the_plan = runner.plan(spec, ordered)
                if not as_json:
                    render_plan(console, the_plan)
                if runner.stop_requested.is_set():
                    _fail("interrupted while planning; nothing was applied")
            if saved and spec.digest() != the_plan.spec_digest:
                _fail(f"{source}: the spec {the_plan.spec_path} changed since this plan was "
                      "made; plan again")
            reports = runner.apply(spec, the_plan, saved=saved, ordered=ordered)
        finally:
            runner.close()
    except FileNotFoundError as exc:
        _fail(f"{exc.filename}: file not found")
    except ProvisionError as exc:
        _fail(str(exc))
    elapsed = time.monotonic() - started
    if as_json:
        sys.stdout.write(json.dumps(reports_to_json(reports, elapsed), indent=2) + "\n")
    else:
        render_summary(console, reports, elapsed)
    if any(r.status != "ok" and r.status != "changed" for r in reports.values()):
        sys.exit(130 if runner.stop_requested.is_set() else 1)


@main.command(context_settings=CONTEXT)
@click.argument("playbook", type=click.Path(dir_okay=False))
@common_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--plan-only", is_flag=True, help="Show what would be destroyed and stop.")
def destroy(playbook: str, yes: bool, plan_only: bool, **opts: Any) -> None:
    """Delete everything PLAYBOOK declares (and owned resources it no longer
    declares). Commands are skipped: they have nothing to undo."""
    from provisioner.engine.prune import destroy_view
    from provisioner.ui.console import Console
    from provisioner.ui.render import render_plan
    from provisioner.ui.summary import render_summary

    started = time.monotonic()
    console = Console()
    try:
        inventory, spec, ordered = _prepare(playbook, opts)
        for play in spec.plays:
            play.prune = True
            kinds = {r.kind for r in spec.resources if r.host in play.hosts}
            play.prune_kinds = sorted(set(play.prune_kinds) | {
                k for k in kinds if _ownable(k)})
        ordered = {h: destroy_view(rs) for h, rs in ordered.items()}
        runner = _runner(inventory, opts)
        try:
            the_plan = runner.plan(spec, ordered)
            render_plan(console, the_plan)
            if plan_only or not the_plan.has_changes():
                return
            if not yes:
                if not sys.stdin.isatty():
                    _fail("destroy needs --yes when not run from a terminal")
                click.confirm("Destroy all of the above?", abort=True)
            reports = runner.apply(spec, the_plan, saved=False, ordered=ordered)
        finally:
            runner.close()
    except ProvisionError as exc:
        _fail(str(exc))
    render_summary(console, reports, time.monotonic() - started)
    if any(r.status not in ("ok", "changed") for r in reports.values()):
        sys.exit(1)


def _ownable(kind: str) -> bool:
    from modules import get_module
    from provisioner.module import Module

    return type(get_module(kind)).list_owned is not Module.list_owned


@main.command(context_settings=CONTEXT)
@click.argument("planfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--show-unchanged", is_flag=True)
def show(planfile: str, as_json: bool, show_unchanged: bool) -> None:
    """Render a saved plan for review."""
    from provisioner.plan import codec
    from provisioner.ui.console import Console
    from provisioner.ui.render import render_plan

    try:
        with open(planfile, encoding="utf-8") as fh:
            the_plan = codec.loads(fh.read(), planfile)
    except ProvisionError as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(codec.dumps(the_plan))
    else:
        render_plan(Console(), the_plan, show_noop=show_unchanged)


@main.command(context_settings=CONTEXT)
@click.option("-i", "--inventory", "inventory", multiple=True, metavar="INV")
@click.option("--list", "as_list", is_flag=True, help="JSON as ansible-inventory --list.")
@click.option("--graph", is_flag=True, help="Groups and hosts as a tree.")
@click.option("--host", default=None, metavar="NAME", help="Variables of one host.")
def inventory(inventory: tuple[str, ...], as_list: bool, graph: bool, host: str | None) -> None:
    """Show the inventory as resolved."""
    try:
        inv = _load_inventory(inventory)
        if host:
            click.echo(json.dumps(inv.host_info(host), indent=4, sort_keys=True, default=str))
        elif graph:
            click.echo(inv.graph())
        else:
            click.echo(inv.to_ansible_json())
    except ProvisionError as exc:
        _fail(str(exc))


@main.command(context_settings=CONTEXT)
@click.argument("pattern")
@common_options
@click.option("-p", "--playbook", default=None, help="Also show the observed state of its resources.")
def facts(pattern: str, playbook: str | None, **opts: Any) -> None:
    """Show observed state of hosts matching PATTERN (for debugging)."""
    from provisioner.engine.hostfacts import gather_host_facts
    from provisioner.engine.observe import observe

    try:
        inv = _load_inventory(opts["inventory"])
        hosts = [h.name for h in inv.select(pattern)]
        ordered: dict[str, Any] = {}
        if playbook:
            opts["limit"] = pattern
            inv, _, ordered = _prepare(playbook, opts)
        runner = _runner(inv, opts)

        def one(host: str) -> dict[str, Any]:
            try:
                conn = runner.connection(host)
                out: dict[str, Any] = {"host": gather_host_facts(conn)}
                if ordered.get(host):
                    out["resources"] = observe(conn, ordered[host])
                return out
            except ProvisionError as exc:
                return {"error": str(exc)}

        try:
            result = runner._parallel(hosts, one)
        finally:
            runner.close()
    except ProvisionError as exc:
        _fail(str(exc))
    from provisioner.plan.codec import _clean

    click.echo(json.dumps(_clean(result), indent=2, sort_keys=True))


def _write_file(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
