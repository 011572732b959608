"""The ``hivemem`` command: a thin shell over the Hive.

Each command parses its arguments, calls one Hive method and renders the
result as a table (or JSON with ``--json``). Errors become one clean line on
stderr (the JSON error shape with ``--json``) and an exit code: 2 for invalid
input, 3 for not found, 1 for anything else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import hivemem
from hivemem.config import HiveConfig
from hivemem.errors import ConfigError, HiveError, InvalidInput, NotFound
from hivemem.events import Event
from hivemem.hive import Hive
from hivemem.models import Memory

F = TypeVar("F", bound=Callable[..., Any])
_EXIT_CODES: dict[type[HiveError], int] = {InvalidInput: 2, NotFound: 3}


class Context:
    """What the group options set up for every command."""

    def __init__(self, db: str | None, embedder: str | None, as_json: bool) -> None:
        self.config = HiveConfig.from_env(os.environ)
        self.db_given = db is not None
        if db is not None:
            self.config = self.config.with_options(url=db)
        if embedder is not None:
            self.config = self.config.with_options(embedder=embedder)
        self.as_json = as_json
        self.console = Console()
        self.err = Console(stderr=True)

    def open(self) -> Hive:
        """Open the Hive the options name (a server's URL uses ``HIVEMEM_API_KEY``)."""
        if self.config.url.startswith(("http://", "https://")):
            return hivemem.open(self.config.url, api_key=os.environ.get("HIVEMEM_API_KEY"))
        return hivemem.open(self.config.url, config=self.config)

    def emit(self, payload: Any, render: Callable[[], None] | None = None) -> None:
        """Print ``payload`` as JSON, or call ``render`` for people."""
        if self.as_json or render is None:
            click.echo(json.dumps(payload, default=str, ensure_ascii=False))
        else:
            render()


def _run(fn: F) -> F:
    """Turn HiveErrors into a message and an exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context().find_object(Context)
        try:
            return fn(*args, **kwargs)
        except HiveError as exc:
            if ctx is not None and ctx.as_json:
                click.echo(json.dumps({"error": exc.to_dict()}, default=str), err=True)
            else:
                click.echo(f"error: {exc.message}", err=True)
            sys.exit(_EXIT_CODES.get(type(exc), 1))

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    found = ctx.find_object(Context)
    if value and found is not None:
        found.as_json = True


def _command(fn: F) -> F:
    """Every command: ``--json`` accepted after the command too, and HiveErrors handled."""
    option = click.option(
        "--json", "as_json", is_flag=True, expose_value=False, callback=_set_json, help="Print JSON for scripts."
    )
    return option(click.pass_obj(_run(fn)))  # type: ignore[return-value]


def _json_arg(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput(name, f"is not valid JSON: {exc.msg}") from None


def _memory_table(memories: list[Memory], console: Console) -> None:
    table = Table("id", "namespace", "kind", "tier", "v", "content")
    for m in memories:
        table.add_row(m.id, m.namespace, m.kind, m.tier, str(m.version), _short(m.content))
    console.print(table)


def _short(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@click.group()
@click.option("--db", envvar="HIVEMEM_URL", help="Database: a file path, sqlite:///path, :memory: or postgresql://...")
@click.option("--embedder", envvar="HIVEMEM_EMBEDDER", help="minilm (default), none, or openai:<model>.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.version_option(hivemem.__version__, prog_name="hivemem")
@click.pass_context
def main(ctx: click.Context, db: str | None, embedder: str | None, as_json: bool) -> None:
    """HiveMem: shared, durable memory for teams of AI agents."""
    ctx.obj = Context(db, embedder, as_json)


@main.command()
@click.argument("namespace")
@click.argument("content")
@click.option("--kind", default="note", show_default=True)
@click.option("--tier", default="short", show_default=True)
@click.option("--key")
@click.option("--tag", "tags", multiple=True, help="Repeat for several tags.")
@click.option("--importance", type=float, default=0.5, show_default=True)
@click.option("--data", help="A JSON object.")
@click.option("--agent", "agent_id")
@click.option("--session", "session_id")
@click.option("--parent", "parent_id")
@click.option("--ttl", type=float, help="Seconds until the memory expires.")
@_command
def remember(obj: Context, namespace: str, content: str, data: str | None, ttl: float | None, **options: Any) -> None:
    """Store a memory in NAMESPACE."""
    with obj.open() as hive:
        memory = hive.remember(
            namespace,
            content,
            data=_json_arg(data, "data"),
            ttl=timedelta(seconds=ttl) if ttl is not None else None,
            **options,
        )
    obj.emit(memory.to_dict(), lambda: obj.console.print(f"remembered {memory.id} (version {memory.version})"))


@main.command()
@click.argument("query")
@click.option("--namespace", "-n", help="Namespace prefix to search under.")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--kind", "kinds", multiple=True)
@click.option("--tier", "tiers", multiple=True)
@click.option("--tag", "tags", multiple=True)
@click.option("--agent", "agent_id")
@click.option("--where", help="Conditions on data, e.g. '{\"success\": true}'.")
@click.option("--min-score", type=float)
@_command
def recall(
    obj: Context, /, query: str, kinds: tuple[str, ...], tiers: tuple[str, ...], where: str | None, **opts: Any
) -> None:
    """Find the memories most relevant to QUERY."""
    with obj.open() as hive:
        hits = hive.recall(query, kinds=kinds or None, tiers=tiers or None, where=_json_arg(where, "where"), **opts)

    def render() -> None:
        table = Table("score", "id", "namespace", "kind", "content", "why")
        for h in hits:
            why = " ".join(f"{k}={v:.2f}" for k, v in h.scores.items())
            table.add_row(
                f"{h.score:.3f}", h.memory.id, h.memory.namespace, h.memory.kind, _short(h.memory.content, 60), why
            )
        obj.console.print(table)

    obj.emit([h.to_dict() for h in hits], render)


@main.command()
@click.argument("memory_id")
@_command
def get(obj: Context, memory_id: str) -> None:
    """Show one memory."""
    with obj.open() as hive:
        memory = hive.get(memory_id)
    obj.emit(memory.to_dict())


@main.command(name="list")
@click.argument("namespace", required=False)
@click.option("--kind", "kinds", multiple=True)
@click.option("--tier", "tiers", multiple=True)
@click.option("--tag", "tags", multiple=True)
@click.option("--order-by", default="created_at", show_default=True)
@click.option("--desc", "descending", is_flag=True)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--cursor")
@_command
def list_(obj: Context, /, namespace: str | None, kinds: tuple[str, ...], tiers: tuple[str, ...], **opts: Any) -> None:
    """List memories under NAMESPACE (all if omitted), one page at a time."""
    with obj.open() as hive:
        page = hive.list(namespace, kinds=kinds or None, tiers=tiers or None, **opts)

    def render() -> None:
        _memory_table(list(page.items), obj.console)
        if page.next_cursor:
            obj.console.print(f"next page: --cursor {page.next_cursor}")

    obj.emit({"items": [m.to_dict() for m in page.items], "next_cursor": page.next_cursor}, render)


@main.command()
@click.argument("memory_id", required=False)
@click.option("--cascade", is_flag=True, help="Also forget its children.")
@click.option("--namespace", help="Forget every memory under this prefix instead.")
@_command
def forget(obj: Context, memory_id: str | None, cascade: bool, namespace: str | None) -> None:
    """Forget a memory (or a whole namespace with --namespace)."""
    if (memory_id is None) == (namespace is None):
        raise InvalidInput("memory_id", "give a memory id or --namespace, not both")
    with obj.open() as hive:
        count = hive.forget_namespace(namespace) if namespace else hive.forget(str(memory_id), cascade=cascade)
    obj.emit({"forgotten": count}, lambda: obj.console.print(f"forgot {count} memories"))


@main.command()
@click.argument("namespace", required=False)
@_command
def stats(obj: Context, namespace: str | None) -> None:
    """Counts and bytes by kind and tier."""
    with obj.open() as hive:
        result = hive.stats(namespace)

    def render() -> None:
        table = Table("group", "name", "memories", "bytes")
        for group in ("by_kind", "by_tier"):
            for name, slot in result[group].items():
                table.add_row(group[3:], name, str(slot["memories"]), str(slot["bytes"]))
        table.add_row("total", "", str(result["memories"]), str(result["bytes"]))
        obj.console.print(table)

    obj.emit(result, render)


@main.command()
@_command
def sweep(obj: Context) -> None:
    """Delete expired memories and unused vectors."""
    with obj.open() as hive:
        counts = hive.sweep()
    obj.emit(counts, lambda: obj.console.print(", ".join(f"{k}: {v}" for k, v in counts.items())))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


@main.command(name="export")
@click.argument("output", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path), default="-")
@click.option("--namespace", "-n", help="Only this prefix.")
@_command
def export_(obj: Context, output: Path, namespace: str | None) -> None:
    """Write memories as JSON Lines to OUTPUT (- for stdout), streaming."""
    with obj.open() as hive:
        total = hive.stats(namespace)["memories"]
        to_stdout = str(output) == "-"
        stream: IO[str] = sys.stdout if to_stdout else output.open("w", encoding="utf-8")
        count = 0
        try:
            with _progress(obj.err) as progress:
                task = progress.add_task("exporting", total=total)
                for memory in hive.export(namespace):
                    stream.write(json.dumps(memory.to_dict(), ensure_ascii=False) + "\n")
                    count += 1
                    progress.advance(task)
        finally:
            if not to_stdout:
                stream.close()
    if not to_stdout:
        obj.emit({"exported": count}, lambda: obj.console.print(f"exported {count} memories to {output}"))


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


@main.command(name="import")
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", type=int, default=500, show_default=True)
@_command
def import_(obj: Context, source: Path, batch_size: int) -> None:
    """Read memories from a JSON Lines file (- for stdin), keeping every field."""
    from_stdin = str(source) == "-"
    if not from_stdin and not source.exists():
        raise InvalidInput("source", f"{source} does not exist")
    stream: IO[str] = sys.stdin if from_stdin else source.open(encoding="utf-8")
    total = None if from_stdin else _count_lines(source)
    try:
        with obj.open() as hive, _progress(obj.err) as progress:
            task = progress.add_task("importing", total=total)

            def records() -> Iterator[Memory]:
                for number, line in enumerate(stream, start=1):
                    if not line.strip():
                        continue
                    try:
                        memory = Memory.from_dict(json.loads(line))
                    except (ValueError, TypeError) as exc:
                        raise InvalidInput(f"line {number}", f"not a memory record: {exc}") from None
                    progress.advance(task)
                    yield memory

            count = hive.import_memories(records(), batch_size=batch_size)
    finally:
        if not from_stdin:
            stream.close()
    obj.emit({"imported": count}, lambda: obj.console.print(f"imported {count} memories"))


@main.command()
@click.option("--check", is_flag=True, help="Only verify the schema is current (for roles without DDL rights).")
@_command
def migrate(obj: Context, check: bool) -> None:
    """Bring the database schema up to date (exit 1 with --check if it is behind)."""
    from hivemem.storage import migrate as migrate_store

    result = migrate_store(obj.config, apply=not check)
    obj.emit(
        result,
        lambda: obj.console.print(
            f"{result['backend']} schema at version {result['version']}"
            + (f" (was {result['version_before']})" if result["version_before"] != result["version"] else "")
        ),
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--no-auth", is_flag=True, help="Serve without API keys, as admin:* (refused unless on loopback).")
@click.option("--key-cache", type=float, default=5.0, show_default=True, help="Seconds a checked key is trusted.")
@click.option(
    "--workflows",
    "workflow_modules",
    multiple=True,
    help="Import this module (it registers workflows) and resume their unfinished runs at startup (repeatable).",
)
@_command
def serve(
    obj: Context, host: str, port: int, no_auth: bool, key_cache: float, workflow_modules: tuple[str, ...]
) -> None:
    """Serve the database over HTTP (REST, OpenAPI at /openapi.json); create keys with `hivemem keys create`."""
    try:
        from hivemem.server import serve as run_server
    except ImportError as exc:
        raise ConfigError(f"the server needs its extra: pip install 'hivemem[server]' ({exc})") from None
    if not no_auth:
        obj.err.print(f"HiveMem serving {obj.config.url} on http://{host}:{port} (API keys required)")
    run_server(
        obj.config,
        host=host,
        port=port,
        auth=not no_auth,
        key_cache_seconds=key_cache,
        workflow_modules=workflow_modules,
    )


@main.command()
@click.option("--namespace", required=True, help="The agent's namespace: every write goes here.")
@click.option("--agent", default=None, help="The agent's id (default: the namespace's last segment).")
@_command
def mcp(obj: Context, namespace: str, agent: str | None) -> None:
    """Serve the memory tools over MCP on stdio, for one agent (identity and namespace from here only)."""
    try:
        from hivemem.mcp_server import build_server, stdio_agent
    except ImportError as exc:
        raise ConfigError(f"the MCP server needs its extra: pip install 'hivemem[mcp]' ({exc})") from None
    from hivemem import validation

    checked = validation.namespace(namespace)
    name = agent or checked.rsplit("/", 1)[-1]
    with obj.open() as hive:
        me = stdio_agent(hive, checked, name)
        build_server(lambda _: me).run("stdio")


@main.command()
@click.option("--namespace", default=None, help="Only resources under this prefix.")
@_command
def locks(obj: Context, namespace: str | None) -> None:
    """Leases held now: resource, mode, fencing token, holder and expiry (the database's clock)."""
    with obj.open() as hive:
        held = hive.locks(namespace)
    rows = [{k: v for k, v in lease.to_dict().items() if k != "lease_id"} for lease in held]

    def render() -> None:
        table = Table("resource", "mode", "token", "holder", "expires")
        for row in rows:
            table.add_row(row["resource"], row["mode"], str(row["token"]), row["holder"], row["expires_at"][:23])
        obj.console.print(table if rows else "no leases held")

    obj.emit(rows, render)


@main.command()
@click.option("--namespace", required=True, help="A namespace prefix; numbers count per its root.")
@click.option("--since", type=int, default=0, show_default=True, help="Only events after this sequence number.")
@click.option("--type", "types", multiple=True, help="Only this event type (repeatable).")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many (without --follow).")
@click.option("--follow", is_flag=True, help="Keep printing events as they commit, until interrupted.")
@_command
def events(obj: Context, namespace: str, since: int, types: tuple[str, ...], limit: int, follow: bool) -> None:
    """Committed changes in order: one line each (JSON lines with --json)."""
    wanted = list(types) or None
    with obj.open() as hive:
        found: Iterable[Event] = (
            hive.subscribe(namespace, since=since, types=wanted)
            if follow
            else hive.events(namespace, since=since, limit=limit, types=wanted)
        )
        try:
            for event in found:
                if obj.as_json:
                    click.echo(json.dumps(event.to_dict(), ensure_ascii=False))
                else:
                    data = json.dumps(dict(event.data), ensure_ascii=False)
                    at = event.at.isoformat()[:23]
                    click.echo(f"{event.seq:>8} {at} {event.type:<16} {event.namespace} {event.subject} {data}")
        except KeyboardInterrupt:
            return


@main.group()
def keys() -> None:
    """Manage API keys for `hivemem serve` (stored hashed in the database)."""


@keys.command("create")
@click.option("--principal", required=True, help="Who the key stands for, e.g. agent-7.")
@click.option(
    "--grant", "grants", multiple=True, required=True, help="level:prefix, e.g. write:team-a; admin:* for all."
)
@_command
def keys_create(obj: Context, principal: str, grants: tuple[str, ...]) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    with obj.open() as hive:
        record, key = hive.create_api_key(principal, list(grants))
    payload = {"key_id": record.key_id, "principal": principal, "grants": list(grants), "key": key}
    obj.emit(payload, lambda: obj.console.print(f"key {record.key_id} for {principal}: {key}"))


@keys.command("list")
@_command
def keys_list(obj: Context) -> None:
    """Every key: id, principal, grants, created, revoked (never the key)."""
    with obj.open() as hive:
        records = hive.api_keys()
    rows: list[dict[str, Any]] = [
        {
            "key_id": r.key_id,
            "principal": r.principal.name,
            "grants": [str(g) for g in r.principal.grants],
            "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in records
    ]

    def render() -> None:
        table = Table("key id", "principal", "grants", "created", "revoked")
        for row in rows:
            table.add_row(
                row["key_id"],
                row["principal"],
                " ".join(row["grants"]),
                row["created_at"][:19],
                (row["revoked_at"] or "")[:19],
            )
        obj.console.print(table)

    obj.emit(rows, render)


@keys.command("revoke")
@click.argument("key_id")
@_command
def keys_revoke(obj: Context, key_id: str) -> None:
    """Revoke a key (servers stop accepting it within their key cache time)."""
    with obj.open() as hive:
        hive.revoke_api_key(key_id)
    obj.emit({"revoked": key_id}, lambda: obj.console.print(f"revoked {key_id}"))


@main.command()
@_command
def demo(obj: Context) -> None:
    """Run a short multi-agent scenario against the database (a temporary one unless --db is given)."""
    from hivemem.demo import run_demo

    run_demo(obj.config, obj.console, explicit_db=obj.db_given)


@main.group()
def plans() -> None:
    """Plans: tasks with dependencies, in parallel levels, and their states."""


@plans.command("show")
@click.argument("plan_id")
@click.option("--namespace", "-n", required=True, help="Where the plan is stored.")
@_command
def plans_show(obj: Context, plan_id: str, namespace: str) -> None:
    """A plan's levels, each task's state and agent, and its progress."""
    with obj.open() as hive:
        plan = hive.plan(plan_id, namespace=namespace)

    def render() -> None:
        progress = plan.progress
        title = f" ({plan.title})" if plan.title else ""
        obj.console.print(f"plan {plan.id}{title} in {plan.namespace}: {progress.fraction:.0%} done")
        table = Table("level", "task", "state", "agent", "depends on", "description")
        for number, level in enumerate(plan.levels):
            for task_id in level:
                task = plan.task(task_id)
                table.add_row(
                    str(number),
                    task.id,
                    task.state,
                    task.agent or "",
                    ", ".join(task.depends_on),
                    _short(task.description, 60),
                )
        obj.console.print(table)
        counts = ", ".join(f"{state} {n}" for state, n in progress.by_state.items() if n)
        obj.console.print(f"{progress.total} tasks: {counts}")

    obj.emit(plan.to_dict(), render)


@plans.command("list")
@click.option("--namespace", "-n", required=True, help="Prefix the plans are stored under.")
@click.option("--limit", type=int, default=20, show_default=True)
@_command
def plans_list(obj: Context, namespace: str, limit: int) -> None:
    """The plans under a prefix, newest first, with their progress."""
    with obj.open() as hive:
        found = hive.plans(namespace, limit=limit)

    def render() -> None:
        table = Table("plan", "namespace", "title", "tasks", "done", "created")
        for plan in found:
            table.add_row(
                plan.id,
                plan.namespace,
                _short(plan.title or "", 40),
                str(plan.progress.total),
                f"{plan.progress.fraction:.0%}",
                plan.created_at.isoformat()[:19],
            )
        obj.console.print(table)

    obj.emit([p.to_dict() for p in found], render)


@main.group(invoke_without_command=True)
@click.option("--namespace", "-n", help="Prefix the agents are registered under.")
@click.pass_context
def agents(ctx: click.Context, namespace: str | None) -> None:
    """Registered agents with their specializations and success rates (``agents select`` ranks them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(agents_list, namespace=namespace)


@agents.command("list")
@click.option("--namespace", "-n", help="Prefix the agents are registered under (default: all).")
@_command
def agents_list(obj: Context, namespace: str | None) -> None:
    """Every agent registered under the prefix."""
    with obj.open() as hive:
        profiles = hive.agents(namespace)

    def render() -> None:
        table = Table("agent", "namespace", "specializations", "ok", "failed", "rate", "mean s")
        for p in profiles:
            mean = "" if p.mean_duration is None else f"{p.mean_duration:.1f}"
            table.add_row(
                p.name,
                p.namespace,
                ", ".join(p.specializations),
                str(p.successes),
                str(p.failures),
                f"{p.success_rate:.2f}",
                mean,
            )
        obj.console.print(table)

    obj.emit([p.to_dict() for p in profiles], render)


@agents.command("select")
@click.argument("task")
@click.option("--namespace", "-n", help="Prefix the agents are registered under (default: all).")
@click.option("--skill", "skills", multiple=True, help="A skill the task needs; repeat for several.")
@click.option("--candidate", "candidates", multiple=True, help="Only this agent; repeat for several.")
@_command
def agents_select(
    obj: Context, task: str, namespace: str | None, skills: tuple[str, ...], candidates: tuple[str, ...]
) -> None:
    """Rank the agents for a task, with the score's three parts."""
    with obj.open() as hive:
        ranking = hive.select_agent(task, namespace=namespace, skills=skills, candidates=candidates or None)

    def render() -> None:
        table = Table("agent", "score", "specialization", "experience", "performance")
        for s in ranking:
            table.add_row(
                s.agent, f"{s.score:.3f}", f"{s.specialization:.3f}", f"{s.experience:.3f}", f"{s.performance:.3f}"
            )
        obj.console.print(table)

    obj.emit([s.to_dict() for s in ranking], render)


@main.group()
def resources() -> None:
    """Memory resources files: the settings of working-memory buffers."""


@resources.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_command
def resources_check(obj: Context, file: Path) -> None:
    """Check a resources file: list its resources, or print every error and exit with 2."""
    from hivemem.resources import ResourceRegistry

    try:
        registry = ResourceRegistry.load(file)
    except ConfigError as exc:
        if obj.as_json:
            click.echo(json.dumps({"error": exc.to_dict()}, default=str), err=True)
        else:
            for line in exc.details.get("errors") or [exc.message]:
                click.echo(f"error: {line}", err=True)
        sys.exit(2)
    rows = [dataclasses.asdict(registry.get(rid)) for rid in registry.ids()]

    def render() -> None:
        table = Table("id", "type", "limits", "strategy", "key template", "ttl (s)", "counter")
        for row in rows:
            limits = [f"{row[f'max_{unit}']} {unit}" for unit in ("tokens", "messages") if row[f"max_{unit}"]]
            ttl = "" if row["ttl"] is None else f"{row['ttl']:g}"
            table.add_row(
                row["id"],
                row["type"],
                ", ".join(limits),
                row["strategy"],
                row["key_template"],
                ttl,
                row["counter"] or "",
            )
        obj.console.print(table)

    obj.emit(rows, render)


@main.group()
def working() -> None:
    """Working-memory buffers: show, append, flush, clear."""


def _message_table(messages: list[Any], console: Console) -> None:
    table = Table("seq", "role", "tokens", "pin", "content")
    for m in messages:
        table.add_row(str(m.seq), m.role, str(m.tokens), "yes" if m.pinned else "", _short(m.content))
    console.print(table if messages else "no messages")


@working.command("show")
@click.argument("key")
@click.option("--budget", type=int, help="Only system and pinned messages and the newest that fit this many tokens.")
@_command
def working_show(obj: Context, key: str, budget: int | None) -> None:
    """A buffer's messages and stats."""
    with obj.open() as hive:
        messages = hive.working_messages(key, token_budget=budget)
        stats = hive.working_stats(key)

    def render() -> None:
        _message_table(messages, obj.console)
        obj.console.print(
            f"{stats.messages} messages, {stats.tokens} tokens; {stats.evictions} evicted, {stats.flushes} flushes"
        )

    obj.emit({"messages": [m.to_dict() for m in messages], "stats": stats.to_dict()}, render)


@working.command("append")
@click.argument("key")
@click.argument("role")
@click.argument("content")
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--pin", is_flag=True, help="Never evict or summarise this message.")
@click.option("--max-tokens", type=int, help="Set the buffer's token limit (with the other settings given).")
@click.option("--max-messages", type=int, help="Set the buffer's message limit.")
@click.option("--strategy", type=click.Choice(["fifo", "lru", "lfu", "priority"]), help="Set the eviction strategy.")
@_command
def working_append(obj: Context, key: str, role: str, content: str, priority: int, pin: bool, **limits: Any) -> None:
    """Append a message; the buffer keeps its stored settings unless limits are given."""
    given = {name: value for name, value in limits.items() if value is not None}
    if given.get("max_messages") is not None and "max_tokens" not in given:
        given["max_tokens"] = None
    with obj.open() as hive:
        stats = hive.working_append(key, role, content, priority=priority, pinned=pin, settings=given or None)
    obj.emit(stats.to_dict(), lambda: obj.console.print(f"{stats.messages} messages, {stats.tokens} tokens"))


@working.command("flush")
@click.argument("key")
@_command
def working_flush(obj: Context, key: str) -> None:
    """Summarise the buffer's oldest messages now."""
    with obj.open() as hive:
        count = hive.working_flush(key)
    obj.emit({"summarized": count}, lambda: obj.console.print(f"summarised {count} messages"))


@working.command("clear")
@click.argument("key")
@_command
def working_clear(obj: Context, key: str) -> None:
    """Delete every message of the buffer."""
    with obj.open() as hive:
        count = hive.working_clear(key)
    obj.emit({"cleared": count}, lambda: obj.console.print(f"cleared {count} messages"))


@main.group()
def workflows() -> None:
    """Durable workflows: list runs, show one with its steps, cancel, resume unfinished ones."""


def _workflow_row(wf: Any) -> dict[str, Any]:
    return {k: v for k, v in wf.to_dict().items() if k not in ("steps", "inputs", "result")}


@workflows.command("list")
@click.option("--status", "statuses", multiple=True, help="Only runs with this status (repeatable).")
@click.option("--namespace", default=None, help="Only runs under this namespace prefix.")
@click.option("--limit", type=int, default=100, show_default=True)
@_command
def workflows_list(obj: Context, statuses: tuple[str, ...], namespace: str | None, limit: int) -> None:
    """Runs, oldest first: id, namespace, workflow, status, updated."""
    with obj.open() as hive:
        runs = hive.workflows(status=list(statuses) or None, namespace=namespace, limit=limit)
    rows = [_workflow_row(wf) for wf in runs]

    def render() -> None:
        table = Table("id", "namespace", "workflow", "status", "updated")
        for row in rows:
            table.add_row(row["id"], row["namespace"], row["name"], row["status"], row["updated_at"][:23])
        obj.console.print(table if rows else "no workflows")

    obj.emit(rows, render)


@workflows.command("show")
@click.argument("workflow_id")
@click.option("--namespace", required=True, help="The run's namespace.")
@_command
def workflows_show(obj: Context, workflow_id: str, namespace: str) -> None:
    """One run with its inputs, result or error, and recorded steps."""
    with obj.open() as hive:
        wf = hive.get_workflow(workflow_id, namespace=namespace)
    payload = wf.to_dict()

    def render() -> None:
        obj.console.print(f"{wf.id} ({wf.name}) in {wf.namespace}: {wf.status}")
        obj.console.print(f"inputs: {json.dumps(wf.inputs, ensure_ascii=False)}")
        if wf.status == "succeeded":
            obj.console.print(f"result: {_short(json.dumps(wf.result, ensure_ascii=False))}")
        if wf.error:
            obj.console.print(f"error: {wf.error.get('type')}: {wf.error.get('message')}")
        table = Table("step", "name", "status", "attempts", "result or error")
        for s in wf.steps:
            outcome = s.result if s.status == "succeeded" else s.error
            table.add_row(str(s.step), s.name, s.status, str(s.attempts), _short(json.dumps(outcome)))
        obj.console.print(table)

    obj.emit(payload, render)


@workflows.command("cancel")
@click.argument("workflow_id")
@click.option("--namespace", required=True, help="The run's namespace.")
@_command
def workflows_cancel(obj: Context, workflow_id: str, namespace: str) -> None:
    """Cancel a run: its executor records no further step."""
    with obj.open() as hive:
        wf = hive.cancel_workflow(workflow_id, namespace=namespace)
    obj.emit(_workflow_row(wf), lambda: obj.console.print(f"{wf.id}: {wf.status}"))


@workflows.command("recover")
@click.option("--module", "modules", multiple=True, required=True, help="A module that registers workflows.")
@_command
def workflows_recover(obj: Context, modules: tuple[str, ...]) -> None:
    """Import the modules and resume every unfinished run of their workflows here, one executor per run."""
    from hivemem.workflows import import_modules

    names = import_modules(modules)
    with obj.open() as hive:
        counts = hive.recover(names)
    obj.emit(counts, lambda: obj.console.print(", ".join(f"{k}: {v}" for k, v in counts.items())))
