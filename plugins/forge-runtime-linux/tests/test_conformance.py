"""The core's Runtime and ImageStore conformance suites, run against ``linux`` and ``snapshot``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from forge_core.abc import ContainerSpec, Volume
from forge_core.testing.runtime import RuntimeConformance

pytestmark = [pytest.mark.linux, pytest.mark.root]


class TestLinuxRuntimeConformance(RuntimeConformance):
    """The shared Runtime behaviour, in busybox containers."""

    share: ClassVar[str] = ""

    @pytest.fixture(autouse=True)
    def _share_tmp(self, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[None]:
        # the suite's probes are FIFOs under pytest's tmp dir: bind it at the same path, and let
        # container root (an unprivileged host uid in its user namespace) reach and write them
        type(self).share = str(tmp_path_factory.getbasetemp())
        for path in (tmp_path_factory.getbasetemp(), tmp_path):
            path.chmod(0o711)
        old = os.umask(0)
        yield
        os.umask(old)

    def make_spec(self, *argv: str, **fields: Any) -> ContainerSpec:
        fields.setdefault("image", "busybox:test")
        fields.setdefault("volumes", (Volume(source=self.share, target=self.share),))
        return ContainerSpec(command=argv, **fields)
