"""Every error Forge raises on purpose, in one shallow tree under :class:`ForgeError`.

Each class says who raises it. Facts travel as attributes so callers (the CLI
above all) never parse messages. No backend's own exception (``redis.*``,
``grpc.*``, raw ``OSError``) escapes a plugin: plugins map them to these.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "ConfigProblem",
    "CycleError",
    "ForgeError",
    "LeaseLost",
    "NotFound",
    "PluginError",
    "RunLocked",
    "TaskFailed",
    "Unsupported",
]


class ForgeError(Exception):
    """Base of every error Forge raises on purpose; its message is fit for a user."""


class ConfigProblem:
    """One problem in a config: where (file, line, field path) and what."""

    __slots__ = ("field", "file", "line", "message")

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str = ""
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field

    def __str__(self) -> str:
        if self.file is None and self.line is None:  # not from a file: a flag or an option
            return f"{self.field}: {self.message}" if self.field else self.message
        where = self.file or "<config>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({self!s})"


class ConfigError(ForgeError):
    """Raised by the config loader and validators: one line per problem, file:line: field: what."""

    def __init__(self, problems: Sequence[ConfigProblem] | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(problems)]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CycleError(ConfigError):
    """Raised by the graph module when tasks depend on each other in a loop.

    ``cycle`` lists the task names in order, the first repeated at the end.
    """

    def __init__(self, cycle: Sequence[str], *, file: str | None = None, where: str = "") -> None:
        self.cycle = list(cycle)
        super().__init__(
            [ConfigProblem(f"dependency cycle: {' -> '.join(self.cycle)}", file=file, field=where)]
        )


class PluginError(ForgeError):
    """Raised by the plugin loader: missing, duplicate, broken or unusable plugins."""

    def __init__(self, message: str, *, group: str = "", name: str = "") -> None:
        self.group = group
        self.name = name
        super().__init__(message)


class BackendUnavailable(ForgeError):
    """Raised by a backend that cannot be used here or cannot be reached (server down, no kernel
    feature); ``reason`` is one line a user can act on."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Unsupported(ForgeError):
    """Raised by a backend asked for something it cannot enforce (a memory limit, a port, an
    image); Forge refuses rather than silently ignoring the request."""


class NotFound(ForgeError):
    """Raised when a named thing (run, task, image, container, queue item) does not exist."""


class TaskFailed(ForgeError):
    """Raised by Python tasks (or their callers) to fail a task with a message and no traceback."""

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class LeaseLost(ForgeError):
    """Raised by a Queue when an ack, nack, extend or checkpoint carries a stale fencing token:
    the item was reclaimed and handed to someone else."""


class RunLocked(ForgeError):
    """Raised by the state store when another live engine already drives the run."""

    def __init__(self, run_id: str, owner: str) -> None:
        self.run_id = run_id
        self.owner = owner
        super().__init__(f"run {run_id} is already being driven by {owner}")
