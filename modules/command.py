"""`command`: the escape hatch, a command run on the host.

    - command: {name: build index, argv: [/usr/local/bin/mkindex, /srv/data],
                creates: /srv/data/index}
    - command: {name: enable site, cmd: "a2ensite app", unless: "a2query -s app"}
    - command: {name: migrate, cmd: "./manage.py migrate --noinput", chdir: /srv/app,
                env: {DJANGO_SETTINGS_MODULE: app.settings}}
    - command: {name: pipeline, cmd: "gen | gzip > /srv/out.gz", shell: true,
                creates: /srv/out.gz}

`cmd` is split like a shell would split words (shlex) but never given to a
shell, unless `shell: true` says so (then it runs as `sh -c CMD`). A command
is skipped when `creates` exists or `unless` exits 0; both guards run while
planning (the unless command too, with the same chdir and env). Without a
guard it runs on every apply and the post-apply check cannot prove anything
about it.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from provisioner.connection.base import Connection, Result
from provisioner.errors import CommandFailed
from provisioner.module import Module, Probe
from provisioner.plan.model import Change
from provisioner.resource import Resource
from provisioner.secret import Secret, reveal
from provisioner.spec import schema as s

ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*\Z"
# A fixed script: the directory and the command travel as positional
# parameters, never as code.
CHDIR_SCRIPT = 'cd -- "$1" || exit 125; shift; exec "$@"'
STDERR_TAIL_LINES = 20


def _to_text(value: Any) -> Any:
    """YAML numbers and booleans (in argv, env values) become strings:
    `argv: [sleep, 5]` means the word "5"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _words(value: Any, *, shell: bool) -> list[Any]:
    """A list stays as it is; a string is split (or handed to sh -c)."""
    if isinstance(value, list):
        return list(value)
    if shell:
        return ["sh", "-c", value]
    if isinstance(value, Secret):
        return [Secret(w) for w in shlex.split(value.reveal())]
    return shlex.split(value)


def wrap(argv: list[Any], chdir: str | None, env: dict[str, Any] | None) -> list[Any]:
    """argv run in chdir with env added, still an argv (values may be Secrets)."""
    out = list(argv)
    if chdir:
        out = ["sh", "-c", CHDIR_SCRIPT, "sh", chdir, *out]
    if env:
        out = ["env", "--", *[_assign(k, v) for k, v in env.items()], *out]
    return out


def _assign(key: str, value: Any) -> Any:
    if isinstance(value, Secret):
        return Secret(f"{key}={value.reveal()}")
    return f"{key}={value}"


def _tail(result: Result) -> str:
    text = result.err.strip() or result.out.strip()
    return "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])


class CommandModule(Module):
    kind = "command"
    schema = {
        "name": s.string(required=True, empty=False),
        "argv": {"type": "list", "minlength": 1, "schema": s.text(coerce=_to_text)},
        "cmd": s.text(empty=False),
        "shell": s.boolean(default=False),
        "creates": s.string(empty=False),
        "unless": {"type": ["secretstring", "list"], "minlength": 1, "empty": False,
                   "schema": s.text(coerce=_to_text)},
        "chdir": s.string(empty=False),
        "env": {"type": "dict", "keysrules": s.string(regex=ENV_NAME_RE),
                "valuesrules": {"type": "secretstring", "coerce": _to_text}},
        "timeout": s.number(min=0.001),
    }
    control_fields = frozenset({"name", "argv", "creates", "unless", "chdir", "env",
                                "timeout", "shell"})

    def normalize(self, fields: dict[str, Any], ctx: Any) -> dict[str, Any]:
        given = [k for k in ("argv", "cmd") if fields.get(k) is not None]
        if len(given) != 1:
            ctx.fail("argv" if not given else "cmd",
                     "give exactly one of argv (a list) or cmd (a string)")
        shell = bool(fields.get("shell"))
        if shell and "cmd" not in given:
            ctx.fail("shell", "shell: true goes with cmd (a string for sh -c)")
        if "argv" in given:
            argv = list(fields["argv"])
        else:
            argv = self._split(fields["cmd"], shell, ctx, "cmd")
        unless = fields.get("unless")
        if unless is not None and not isinstance(unless, list):
            unless = self._split(unless, shell, ctx, "unless")
        env = dict(fields.get("env") or {}) or None
        if env and "=" in str(reveal(argv[0])):
            ctx.fail("argv" if "argv" in given else "cmd",
                     "starts with an assignment (NAME=value): put it in env instead")
        chdir = fields.get("chdir")
        if chdir is not None and not chdir.startswith("/"):
            ctx.fail("chdir", "must be an absolute path")
        creates = fields.get("creates")
        if creates is not None:
            if not creates.startswith("/"):
                if chdir is None:
                    ctx.fail("creates", "must be an absolute path (or relative with chdir)")
                creates = posixpath.join(chdir, creates)
            creates = posixpath.normpath(creates)
        return {"name": fields["name"], "argv": argv, "creates": creates, "unless": unless,
                "chdir": chdir, "env": env, "timeout": fields.get("timeout"), "shell": shell}

    @staticmethod
    def _split(value: Any, shell: bool, ctx: Any, field: str) -> list[Any]:
        try:
            words = _words(value, shell=shell)
        except ValueError as exc:  # unbalanced quotes
            ctx.fail(field, f"cannot split into words: {exc}")
        if not words:
            ctx.fail(field, "is empty")
        return words

    # -- reading -------------------------------------------------------------------
    def probes(self, res: Resource) -> list[Probe]:
        f = res.fields
        probes = []
        if f.get("creates"):
            probes.append(Probe(("test", "-e", f["creates"])))
        if f.get("unless"):
            probes.append(Probe(tuple(reveal(wrap(f["unless"], f.get("chdir"), f.get("env"))))))
        return probes

    def parse(self, res: Resource, results: list[Result]) -> dict[str, Any] | None:
        f = res.fields
        at = 0
        if f.get("creates"):
            if results[at].ok:
                return {"name": f["name"], "guard": f"{f['creates']} exists"}
            at += 1
        if f.get("unless") and results[at].ok:
            return {"name": f["name"], "guard": "unless succeeded"}
        return None  # not done yet (or unguarded): it runs

    # -- deciding ----------------------------------------------------------------------
    def compare(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
        return []  # observed at all means a guard says it is done

    def create_reason(self, desired: dict[str, Any]) -> str:
        if desired.get("creates"):
            return f"will run: {desired['creates']} does not exist"
        if desired.get("unless"):
            return "will run: the unless check failed"
        return "will run"

    def notes(self, desired: dict[str, Any], observed: dict[str, Any] | None,
              changed: list[str]) -> list[str]:
        out = ["may change the host"]
        if not self.converges(desired):
            out.append("runs on every apply (no creates/unless)")
        return out

    def converges(self, desired: dict[str, Any]) -> bool:
        return bool(desired.get("creates") or desired.get("unless"))

    # -- acting --------------------------------------------------------------------------
    def apply(self, conn: Connection, res: Resource, change: Change) -> None:
        f = res.fields
        full = wrap(f["argv"], f.get("chdir"), f.get("env"))
        result = conn.run(reveal(full), timeout=f.get("timeout"))
        if not result.ok:
            # shown with secrets redacted; the wrapper (env, cd) left out
            shown = [str(a) for a in f["argv"]]
            raise CommandFailed(conn.host, shown, result.rc, _tail(result))

