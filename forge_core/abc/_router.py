"""The Router interface: map hosts and paths to upstreams, all-or-nothing, with the previous
route set kept for rollback."""

from __future__ import annotations

import abc
from typing import ClassVar

import attrs

from ._common import Availability

__all__ = ["Route", "RouteSet", "Router", "RouterHealth"]


@attrs.frozen(kw_only=True)
class Route:
    """Traffic for ``host`` + ``path`` prefix goes to one of ``upstreams`` (``host:port``)."""

    host: str
    path: str = "/"
    upstreams: tuple[str, ...] = attrs.field(converter=tuple)
    health_path: str | None = None


@attrs.frozen(kw_only=True)
class RouteSet:
    """The whole routing table at one version; applied as one unit."""

    routes: tuple[Route, ...] = ()
    version: int = 0


@attrs.frozen(kw_only=True)
class RouterHealth:
    ok: bool
    detail: str = ""


class Router(abc.ABC):
    name: ClassVar[str] = ""

    @classmethod
    def available(cls) -> Availability:
        return Availability.yes()

    @abc.abstractmethod
    async def apply(self, routes: RouteSet) -> None:
        """Replace the whole table with ``routes`` atomically: on any error the previous table
        stays in force and :class:`~forge_core.exceptions.BackendUnavailable` is raised."""

    @abc.abstractmethod
    async def current(self) -> RouteSet:
        """The table in force now."""

    @abc.abstractmethod
    async def previous(self) -> RouteSet | None:
        """The table before the last successful :meth:`apply` (for rollback)."""

    @abc.abstractmethod
    async def health(self) -> RouterHealth:
        """Whether the router process answers and holds the table Forge last applied."""

    async def remove(self, host: str, path: str = "/") -> None:
        """Drop one route, keeping the rest (an :meth:`apply` of the reduced set)."""
        table = await self.current()
        kept = tuple(r for r in table.routes if (r.host, r.path) != (host, path))
        await self.apply(RouteSet(routes=kept, version=table.version + 1))

    async def rollback(self) -> None:
        """Re-apply the previous table."""
        prev = await self.previous()
        if prev is not None:
            await self.apply(prev)
