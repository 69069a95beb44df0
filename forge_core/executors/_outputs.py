"""Reading what a command task wrote to ``$FORGE_OUTPUT``: a JSON object or ``key=value`` lines."""

from __future__ import annotations

import json
import os
from typing import Any

from ._pyrun import OUTPUT_LIMIT

__all__ = ["OutputError", "read_outputs"]


_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)  # Windows has no O_CLOEXEC


class OutputError(Exception):
    """The output file is malformed; the message names the file and the offending line."""


def read_outputs(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Outputs in ``path``: ``{}`` when there is no file or it is empty.

    A file whose first non-blank character is ``{`` is one JSON object; anything else is
    ``key=value`` lines (values are strings; blank lines and ``#`` comments are skipped).
    """
    if path is None or not os.access(path, os.F_OK):
        # most tasks write none: asked without an exception (whose message costs a strerror
        # and a decode per task), and no file object for them
        return {}
    try:
        fd = os.open(path, _READ)
    except FileNotFoundError:  # gone since (a task's own background process removed it)
        return {}
    except OSError as exc:
        raise OutputError(f"cannot read output file {path}: {exc}") from None
    try:
        with open(fd, "rb") as fh:
            data = fh.read(OUTPUT_LIMIT + 1)  # never more: a runaway task cannot fill memory
        if len(data) > OUTPUT_LIMIT:
            raise OutputError(f"output file {path} holds more than {OUTPUT_LIMIT >> 20} MiB; "
                              "write bulk data to a file of your own and output its path")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OutputError(f"cannot read output file {path}: {exc}") from None
    if text.lstrip().startswith("{"):
        return _parse_json(path, text)
    return _parse_lines(path, text)


def _parse_json(path: str | os.PathLike[str], text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise OutputError(f"output file {path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OutputError(f"output file {path} must hold a JSON object")
    return value


def _parse_lines(path: str | os.PathLike[str], text: str) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OutputError(
                f"output file {path} line {number} is not key=value: {raw[:80]!r}"
            )
        outputs[key] = value
    return outputs
