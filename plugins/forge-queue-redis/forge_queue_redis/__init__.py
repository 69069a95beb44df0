"""Forge's ``redis`` queue backend: one Redis shared by agents on many machines."""

from __future__ import annotations

from .queue import RedisConfig, RedisQueue

__all__ = ["RedisConfig", "RedisQueue"]
