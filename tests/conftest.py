"""Shared test settings: async tests run on asyncio (Forge's backend), never on trio."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
