"""Turns a :class:`TaskSpec` into a :class:`TaskRun` for one attempt: templates filled,
environment assembled (workflow, task, secrets, ``FORGE_*``), shell wrapped only when asked,
container fields parsed, log and output paths chosen, secrets redacted."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from ..abc import ContainerSpec, PortMapping, Resources, TaskRun, Volume, attempt_env
from ..exceptions import ConfigError, TaskFailed
from ..secrets import StreamRedactor
from ..spec import TaskSpec, WorkflowSpec
from ._templating import as_text, render_argv, render_shell, render_text

__all__ = ["NullRedactor", "Redacting", "TaskResolver", "load_callable"]


class Redacting(Protocol):
    def redact(self, text: str) -> str: ...
    def redact_obj(self, obj: Any) -> Any: ...
    def stream(self) -> StreamRedactor | None: ...


class NullRedactor:
    """Used when a workflow declares no secrets."""

    def redact(self, text: str) -> str:
        return text

    def redact_obj(self, obj: Any) -> Any:
        return obj

    def stream(self) -> StreamRedactor | None:
        return None


class _TaskOutputs(Mapping[str, Any]):
    """``tasks`` of the template context, ``{name: {"outputs": ...}}``, read from the
    engine's outputs when a template asks (not copied for every attempt)."""

    def __init__(self, outputs: Mapping[str, Mapping[str, Any]]) -> None:
        self._outputs = outputs

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return {"outputs": self._outputs[name]}

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


class _LazyContext(Mapping[str, Any]):
    """The template context, built only if a template asks for it."""

    def __init__(self, resolver: TaskResolver, outputs: Mapping[str, Mapping[str, Any]]) -> None:
        self._resolver = resolver
        self._outputs = outputs
        self._ctx: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        if self._ctx is None:
            self._ctx = self._resolver.context(self._outputs)
        return self._ctx

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


_NO_LIMITS = Resources()


def _resources(
    memory: int | None, cpus: float | None, pids: int | None, cpu_time: float | None
) -> Resources:
    if memory is None and cpus is None and pids is None and cpu_time is None:
        return _NO_LIMITS
    return Resources(memory=memory, cpus=cpus, pids=pids, cpu_time=cpu_time)


def load_callable(ref: str, base_dir: Path | None = None) -> Callable[..., Any]:
    """Import ``module:qualname`` or ``path/file.py:qualname`` (relative to ``base_dir``)."""
    target, _, qualname = ref.rpartition(":")
    if not target or not qualname:
        raise ConfigError(f"python task {ref!r}: expected 'module:function' or 'file.py:function'")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            name = f"forge_task_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise TaskFailed(f"cannot load python task {ref!r}: {exc}") from None
    if not callable(obj):
        raise TaskFailed(f"python task {ref!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _accepted(func: Callable[..., Any], available: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``available`` that ``func`` takes by name (all of it with ``**kwargs``)."""
    params = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(available)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in available.items() if k in names}


def _volume(text: str) -> Volume:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise TaskFailed(f"volume {text!r}: expected HOST:CONTAINER[:ro]")
    return Volume(source=os.path.abspath(parts[0]), target=parts[1],
                  read_only=len(parts) == 3 and parts[2] == "ro")


def _port(text: str) -> PortMapping:
    host, _, ctr = text.rpartition(":")
    ip, _, hport = host.rpartition(":")
    if not (hport.isdigit() and ctr.split("/")[0].isdigit()):
        raise TaskFailed(f"port {text!r}: expected [IP:]HOST_PORT:CONTAINER_PORT")
    port, _, proto = ctr.partition("/")
    return PortMapping(host_port=int(hport), container_port=int(port), host_ip=ip or "127.0.0.1",
                       protocol="udp" if proto == "udp" else "tcp")


@attrs.define
class TaskResolver:
    """Everything about a run that shapes its tasks' attempts."""

    spec: WorkflowSpec
    run_id: str
    home: Path
    params: Mapping[str, Any]
    logical_date: str | None = None
    secret_env: Mapping[str, str] = attrs.field(factory=dict)
    redactor: Redacting = attrs.field(factory=NullRedactor)
    _log_dir: str | None = attrs.field(default=None, init=False)
    _workdirs: dict[str | None, str] = attrs.field(factory=dict, init=False)
    _base_dir: Path | None = attrs.field(default=None, init=False)
    _run_env: dict[str, str] | None = attrs.field(default=None, init=False)

    @property
    def base_dir(self) -> Path:
        """The workflow file's directory (the working directory for a spec built in code),
        fixed for the run."""
        if self._base_dir is None:
            self._base_dir = (Path(self.spec.source).resolve().parent if self.spec.source
                              else Path.cwd())
        return self._base_dir

    def context(self, outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "tasks": _TaskOutputs(outputs),
            "run": {"id": self.run_id, "logical_date": self.logical_date or "",
                    "workflow": self.spec.name},
        }

    def resolve(
        self, task: TaskSpec, attempt: int, outputs: Mapping[str, Mapping[str, Any]]
    ) -> TaskRun:
        stem = self._stem(task.name, attempt)
        log_path, output_path = f"{stem}.log", f"{stem}.out"
        common: dict[str, Any] = {
            "run_id": self.run_id, "task": task.name, "attempt": attempt,
            "timeout": task.timeout, "grace": task.grace,
            "log_path": log_path, "output_path": output_path,
            "skip_exit_codes": () if task.skip_exit_code is None else (task.skip_exit_code,),
        }
        if task.python is not None or task.func is not None:
            func = task.func or load_callable(task.python or "", self.base_dir)
            available = {**self.params, **{d: dict(outputs.get(d, {})) for d in task.depends_on}}
            return TaskRun(**common, kind=task.kind or "python", python=task.python, func=func,
                           inputs=_accepted(func, available))
        container = self._container(
            task, _LazyContext(self, outputs), log_path=log_path,
            forge_env=attempt_env(self.run_id, task.name, attempt, output_path))
        return TaskRun(**common, kind=task.kind or "command", container=container)

    def log_path(self, task: str, attempt: int) -> str:
        """Where attempt ``attempt`` of ``task`` logs."""
        return f"{self._stem(task, attempt)}.log"

    def _stem(self, task: str, attempt: int) -> str:
        """An attempt's files without their suffix: ``<run's log folder>/<task>.<attempt>``."""
        return f"{self._logs()}/{task}.{attempt}"

    def _logs(self) -> str:
        """The run's log folder, made on first use."""
        if self._log_dir is None:
            folder = self.home / "logs" / self.run_id
            folder.mkdir(parents=True, exist_ok=True)
            self._log_dir = str(folder)
        return self._log_dir

    def _tail_env(self) -> dict[str, str]:
        """What every task's environment ends with: secrets, then ``FORGE_*`` of the run."""
        if self._run_env is None:
            self._run_env = {
                **self.secret_env,
                "FORGE_WORKFLOW": self.spec.name,
                "FORGE_LOGICAL_DATE": self.logical_date or "",
                **{f"FORGE_PARAM_{k.upper()}": as_text(v) for k, v in self.params.items()},
            }
        return self._run_env

    def _container(
        self, task: TaskSpec, ctx: Mapping[str, Any], *, log_path: str,
        forge_env: Mapping[str, str],
    ) -> ContainerSpec:
        """The attempt's command, its environment ending with every ``FORGE_*`` variable
        (``forge_env``, the attempt's, too: an executor has nothing to add), and its log."""
        command = task.command
        assert command is not None
        env = {k: render_text(v, ctx) for k, v in {**self.spec.env, **task.env}.items()}
        if task.shell:
            line, values = render_shell(command, ctx)
            argv: tuple[str, ...] = ("/bin/sh", "-c", line)
            env.update(values)
        else:
            argv = render_argv(command, ctx)
        env.update(self._tail_env())
        env.update(forge_env)
        r = task.resources
        return ContainerSpec(
            command=argv, name=f"{self.run_id}-{task.name}", image=task.image, env=env,
            workdir=self._workdir(task.workdir) if task.image is None else task.workdir,
            resources=_resources(r.memory, r.cpus, r.pids, r.cpu_time),
            volumes=tuple(map(_volume, task.volumes)),
            ports=tuple(map(_port, task.ports)),
            network="private" if task.image else "host",
            labels={"forge.run": self.run_id, "forge.task": task.name},
            log_path=log_path,
        )

    def _workdir(self, workdir: str | None) -> str:
        """Where a host command with ``workdir:`` runs (relative to the workflow file)."""
        found = self._workdirs.get(workdir)
        if found is None:
            path = self.base_dir if not workdir else Path(workdir)
            found = self._workdirs[workdir] = str(
                path if path.is_absolute() else self.base_dir / path)
        return found

    def redact(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.redactor.redact(obj)
        return self.redactor.redact_obj(obj)
