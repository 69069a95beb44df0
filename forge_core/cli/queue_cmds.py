"""``forge task``, ``forge agent`` and ``forge queue``: work items on a durable queue and the
long-lived agents that take them. Every command takes ``--queue URL`` (default
``$FORGE_QUEUE`` or ``sqlite:///$FORGE_HOME/queue.db``)."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import anyio
import typer

from .. import plugins
from ..abc import ItemState, NewItem, Queue, QueueItem
from ..agents import AgentManager, PoolConfig, RetryPolicy
from ..agents import state as agent_state
from ..exceptions import ConfigError, NotFound
from ..queue import open_queue
from ._common import ExitCode, emit_json, fail, guard

__all__ = ["agent_app", "queue_app", "task_app"]

T = TypeVar("T")

task_app = typer.Typer(help="Submit and inspect work items on the queue.", no_args_is_help=True)
agent_app = typer.Typer(help="Run and control long-lived agents.", no_args_is_help=True)
queue_app = typer.Typer(help="Inspect the queue itself.", no_args_is_help=True)

QueueOpt = typer.Option(None, "--queue", "-q", envvar="FORGE_QUEUE",
                        help="sqlite:///path or redis://host:port/db")
JsonOpt = typer.Option(False, "--json", help="Print JSON for machines.")


def _with_queue(url: str | None, work: Callable[[Queue], Awaitable[T]]) -> T:
    async def main() -> T:
        queue = open_queue(url)
        try:
            return await work(queue)
        finally:
            with anyio.CancelScope(shield=True):
                await queue.aclose()

    with guard():
        return anyio.run(main)


# -- forge task -------------------------------------------------------------------------------
def _new_item(obj: Any, defaults: dict[str, Any]) -> NewItem:
    if isinstance(obj, dict) and ("kind" in obj or "payload" in obj):
        fields = {**defaults, **obj}
    else:
        fields = {**defaults, "payload": obj}
    if not fields.get("kind"):
        raise ConfigError("every task needs a kind: give --kind or a \"kind\" field")
    known = {"kind", "payload", "priority", "delay", "run_at", "key", "max_deliveries", "tags"}
    extra = sorted(set(fields) - known)
    if extra:
        raise ConfigError(f"unknown task field(s): {', '.join(extra)}; known: {sorted(known)}")
    fields["tags"] = tuple(fields.get("tags") or ())
    try:
        return NewItem(**fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad task: {exc}") from None


def _lines(path: str) -> Iterator[tuple[int, str]]:
    stream = sys.stdin if path == "-" else open(path)  # noqa: SIM115
    with stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                yield number, line


def _read_items(path: str, defaults: dict[str, Any]) -> list[NewItem]:
    items = []
    try:
        for number, line in _lines(path):
            try:
                items.append(_new_item(json.loads(line), defaults))
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not JSON: {exc}") from None
            except ConfigError as exc:
                raise ConfigError(f"{path}:{number}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return items


@task_app.command("submit")
def task_submit(
    kind: str = typer.Option(None, "--kind", "-k", help="Task kind (routes it to agents)."),
    input_: str = typer.Option(None, "--input", "-i", help="The payload, as JSON."),
    file: str = typer.Option(None, "--file", "-f", help="JSONL file of tasks ('-' = stdin)."),
    priority: int = typer.Option(3, "--priority", "-p", min=1, max=5, help="1 highest."),
    delay: float = typer.Option(0.0, "--delay", min=0, help="Seconds before it may run."),
    key: str = typer.Option(None, "--key", help="Idempotency key: a repeat is a no-op."),
    tags: Annotated[list[str] | None, typer.Option(
        "--tag", help="Only agents with every tag take it.")] = None,
    max_deliveries: int = typer.Option(5, "--max-deliveries", min=1),
    queue: str = QueueOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Put one task (--kind, --input) or many (--file tasks.jsonl, one JSON task a line)."""
    defaults: dict[str, Any] = {"kind": kind, "priority": priority, "delay": delay,
                                "max_deliveries": max_deliveries, "tags": tuple(tags or ())}
    with guard():
        if file is not None:
            items = _read_items(file, defaults)
        else:
            try:
                payload = None if input_ is None else json.loads(input_)
            except ValueError as exc:
                fail(f"--input is not JSON: {exc}")
            items = [_new_item({**defaults, "payload": payload, "key": key}, {})]
    ids = _with_queue(queue, lambda q: q.put_many(items))
    if as_json:
        emit_json(ids)
    elif file is not None:
        typer.echo(f"submitted {len(ids)} tasks")
    else:
        typer.echo(ids[0])


@task_app.command("wait")
def task_wait(item_id: str, timeout: float = typer.Option(None, "--timeout", min=0,
                                                          help="Seconds; default forever."),
              queue: str = QueueOpt) -> None:
    """Wait for a task to finish and print it as JSON; exit 1 unless it ended done."""
    item = _with_queue(queue, lambda q: q.wait(item_id, timeout=timeout))
    emit_json(item)
    if item.state != "done":
        raise typer.Exit(ExitCode.FAILED)


def _row(item: QueueItem) -> str:
    age = time.time() - item.created_at
    return (f"{item.id}  {item.state:<9} {item.kind:<14} p{item.priority}  "
            f"{item.deliveries}/{item.max_deliveries}  {age:7.0f}s  {item.last_error or ''}")


@task_app.command("list")
def task_list(state: str = typer.Option(None, "--state", help="pending, reserved, done, dead…"),
              kind: str = typer.Option(None, "--kind"), limit: int = typer.Option(50, "--limit", min=1),
              queue: str = QueueOpt, as_json: bool = JsonOpt) -> None:
    """Tasks, newest first."""
    if state not in (None, "pending", "reserved", "done", "dead", "cancelled"):
        fail(f"unknown state {state!r}; use pending, reserved, done, dead or cancelled")
    wanted = cast(ItemState | None, state)
    items = _with_queue(queue, lambda q: q.list(state=wanted, kind=kind, limit=limit))
    _print_items(items, as_json)


@task_app.command("show")
def task_show(item_id: str, queue: str = QueueOpt) -> None:
    """Everything about one task, as JSON."""
    emit_json(_with_queue(queue, lambda q: q.get(item_id)))


@task_app.command("cancel")
def task_cancel(item_id: str, queue: str = QueueOpt) -> None:
    """Cancel a pending or running task."""
    if not _with_queue(queue, lambda q: q.cancel(item_id)):
        fail(f"task {item_id} had already finished", ExitCode.FAILED)
    typer.echo(f"cancelled {item_id}")


@task_app.command("requeue")
def task_requeue(item_id: str, queue: str = QueueOpt) -> None:
    """Make a dead or cancelled task pending again with a fresh delivery budget."""
    _with_queue(queue, lambda q: q.requeue(item_id))
    typer.echo(f"requeued {item_id}")


def _print_items(items: Sequence[QueueItem], as_json: bool) -> None:
    if as_json:
        emit_json(items)
        return
    for item in items:
        typer.echo(_row(item))


def _print_stats(queue: str | None, as_json: bool) -> None:
    stats = _with_queue(queue, lambda q: q.stats())
    if as_json:
        emit_json(stats)
        return
    states = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_state.items())) or "empty"
    prios = ", ".join(f"p{k} {v}" for k, v in sorted(stats.pending_by_priority.items())) or "-"
    age = "-" if stats.oldest_pending_age is None else f"{stats.oldest_pending_age:.1f}s"
    typer.echo(f"by state: {states}\npending by priority: {prios}\noldest waiting: {age}")


@task_app.command("stats")
def task_stats(queue: str = QueueOpt, as_json: bool = JsonOpt) -> None:
    """Depth by state and priority, and the oldest waiting age."""
    _print_stats(queue, as_json)


# -- forge queue ------------------------------------------------------------------------------
@queue_app.command("stats")
def queue_stats(queue: str = QueueOpt, as_json: bool = JsonOpt) -> None:
    """Depth by state and priority, and the oldest waiting age."""
    _print_stats(queue, as_json)


@queue_app.command("dead-letters")
def queue_dead_letters(limit: int = typer.Option(100, "--limit", min=1), queue: str = QueueOpt,
                       as_json: bool = JsonOpt) -> None:
    """Tasks that spent their deliveries (requeue one with: forge task requeue ID)."""
    items: list[QueueItem] = list(_with_queue(queue, lambda q: q.dead_letters(limit)))
    _print_items(items, as_json)


@queue_app.command("rate-limit")
def queue_rate_limit(kind: str, per_second: float = typer.Argument(..., help="0 removes it."),
                     burst: int = typer.Option(1, "--burst", min=1), queue: str = QueueOpt) -> None:
    """Deliver at most PER_SECOND tasks of KIND, shared by every agent of this queue."""
    _with_queue(queue, lambda q: q.set_rate_limit(kind, per_second or None, burst))
    typer.echo(f"{kind}: {'no limit' if not per_second else f'{per_second}/s, burst {burst}'}")


# -- forge agent ------------------------------------------------------------------------------
def _split(values: list[str]) -> tuple[str, ...]:
    return tuple(v for value in values for v in value.split(",") if v)


@agent_app.command("start", context_settings={"allow_interspersed_args": False})
def agent_start(
    command: Annotated[list[str], typer.Argument(help="The agent command (after --).")],
    count: int = typer.Option(1, "--count", "-n", min=1),
    tags: Annotated[list[str] | None, typer.Option(
        "--tags", help="Tags these agents hold (comma list).")] = None,
    kinds: Annotated[list[str] | None, typer.Option(
        "--kinds", help="Only these task kinds (comma list).")] = None,
    name: str = typer.Option("agent", "--name", help="Pool name; agents are NAME-0, NAME-1…"),
    concurrency: int = typer.Option(5, "--concurrency", min=1),
    lease: float = typer.Option(30.0, "--lease", min=0.001, help="Lease seconds, heartbeated."),
    grace: float = typer.Option(10.0, "--grace", min=0, help="SIGTERM → SIGKILL seconds."),
    max_memory: int = typer.Option(None, "--max-memory", min=1, help="Bytes; restart above it."),
    health_command: str = typer.Option(None, "--health-command",
                                       help="Run at each health check (argv, space separated)."),
    retry_on: Annotated[list[str] | None, typer.Option(
        "--retry-on", help="Retry only errors matching this regex.")] = None,
    retry_delay: float = typer.Option(1.0, "--retry-delay", min=0,
                                      help="First retry's delay; doubles each time, jittered."),
    silence_timeout: float = typer.Option(None, "--silence-timeout", min=0.001,
                                          help="Restart an agent silent this long mid-task."),
    prefetch: int = typer.Option(16, "--prefetch", min=0,
                                 help="Most tasks leased ahead by an agent of short tasks."),
    runtime: str = typer.Option("process", "--runtime"),
    queue: str = QueueOpt,
) -> None:
    """Run COUNT agents in the foreground; Ctrl-C drains (a second Ctrl-C stops now)."""
    argv: tuple[str, ...] = tuple(command)
    config = PoolConfig(
        command=argv, name=name, count=count, concurrency=concurrency,  # type: ignore[arg-type]
        tags=_split(tags or []), kinds=_split(kinds or []) or None, lease=lease, grace=grace,
        max_memory=max_memory,
        health_command=tuple(health_command.split()) if health_command else None,
        retry=RetryPolicy(retry_on=tuple(retry_on or ()) or (".*",), base=retry_delay),
        silence_timeout=silence_timeout, prefetch=prefetch)

    async def work(q: Queue) -> None:
        manager = AgentManager(q, plugins.create("runtime", runtime), config)
        typer.echo(f"{len(manager.slots)} agent(s) started; Ctrl-C drains", err=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain_on_signal, manager, tg.cancel_scope)
            await manager.run()
            tg.cancel_scope.cancel()
        typer.echo("agents stopped", err=True)

    _with_queue(queue, work)


async def _drain_on_signal(manager: AgentManager, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if manager.draining:
                scope.cancel()
                return
            typer.echo("draining: finishing running tasks (Ctrl-C again to stop now)", err=True)
            manager.drain()


AgentsDir = typer.Option(None, "--state-dir", hidden=True)


@agent_app.command("list")
def agent_list(as_json: bool = JsonOpt, state_dir: Path = AgentsDir) -> None:
    """Agents on this machine, with state, current task, counters and resource use."""
    agents = agent_state.read_agents(agent_state.agents_dir(state_dir))
    if as_json:
        emit_json(agents)
        return
    for a in agents:
        typer.echo(f"{a['name']:<16} {a['state']:<9} pid {a.get('pid') or '-':<8} "
                   f"task {a.get('item') or '-':<24} done {a.get('done', 0)} "
                   f"failed {a.get('failed', 0)} crashes {a.get('crashes', 0)} "
                   f"mem {a.get('memory', 0) // 1_048_576}MiB cpu {a.get('cpu', 0.0):.1f}s")


def _control(name: str, action: str, state_dir: Path | None) -> None:
    with guard():
        agent_state.request(agent_state.agents_dir(state_dir), name, action)
    typer.echo(f"asked {name} to {action}")


@agent_app.command("stop")
def agent_stop(name: str, state_dir: Path = AgentsDir) -> None:
    """Stop agent NAME after its current task (its manager keeps the others)."""
    _control(name, "stop", state_dir)


@agent_app.command("pause")
def agent_pause(name: str, state_dir: Path = AgentsDir) -> None:
    """Freeze agent NAME (SIGSTOP); its lease is still heartbeated."""
    _control(name, "pause", state_dir)


@agent_app.command("resume")
def agent_resume(name: str, state_dir: Path = AgentsDir) -> None:
    """Thaw agent NAME (SIGCONT)."""
    _control(name, "resume", state_dir)


@agent_app.command("logs")
def agent_logs(name: str, tail: int = typer.Option(100, "--tail", "-n", min=0),
               state_dir: Path = AgentsDir) -> None:
    """The last lines of agent NAME's log (its stderr and the manager's notes)."""
    folder = agent_state.agents_dir(state_dir)
    path = folder / f"{name}.log"
    with guard():
        if not path.exists():
            if (folder / f"{name}.json").exists():
                return  # it has written nothing (a silent run leaves no file)
            raise NotFound(f"no log for agent {name!r}; see: forge agent list")
        lines = path.read_text(errors="replace").splitlines()
    for line in lines[-tail:]:
        typer.echo(line)
