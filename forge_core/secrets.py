"""Workflow secrets: read them from environment variables or files, and mask them (with
their JSON-escaped and base64 forms) everywhere Forge writes.

A secret's mapping key is the environment variable the tasks see; ``env`` names the variable
it is read from (the key itself when neither ``env`` nor ``file`` is given) and ``file`` a
file whose text (one trailing newline dropped) is the value. Values shorter than
:data:`MIN_SECRET_LENGTH` characters are not masked: replacing every ``a`` or ``1`` in a log
would destroy it while hiding nothing a guesser could not try.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .spec import SecretSpec, WorkflowSpec

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Redactor", "StreamRedactor", "resolve_secrets"]

log = logging.getLogger(__name__)

MASK = "***"
MIN_SECRET_LENGTH = 4


def resolve_secrets(spec: WorkflowSpec, base_dir: Path) -> dict[str, str]:
    """Every declared secret of ``spec`` as ``{env var name: value}``; a missing or empty
    variable or file, or an unreadable file, is a :class:`ConfigError` naming the workflow
    and the secret (an empty secret is a mistake to stop at, like ``export TOKEN=$(cat
    missing)``, and there is nothing in it to mask)."""
    return {name: _read(spec.name, name, secret, base_dir) for name, secret in spec.secrets.items()}


def _read(workflow: str, name: str, secret: SecretSpec, base_dir: Path) -> str:
    where = f"workflow {workflow!r} secret {name!r}"
    if secret.file:
        path = Path(secret.file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
        value = text[:-1] if text.endswith("\n") else text
        if not value:
            raise ConfigError(f"{where}: {path} is empty")
        return value
    var = secret.env or name
    found = os.environ.get(var)
    if found is None:
        raise ConfigError(f"{where}: environment variable {var} is not set")
    if not found:
        raise ConfigError(f"{where}: environment variable {var} is empty")
    return found


def _b64_forms(raw: bytes) -> set[str]:
    """The base64 text of ``raw`` as it appears inside a longer encoded blob, at each of the
    three byte alignments (only the characters that depend on ``raw`` alone), standard and
    URL-safe, plus the whole padded encoding."""
    forms = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        enc = base64.b64encode(b"\0" * offset + raw).rstrip(b"=")
        if (offset + len(raw)) % 3:
            enc = enc[:-1]
        fragment = enc[skip:].decode()
        if len(fragment) >= MIN_SECRET_LENGTH:
            forms.add(fragment)
            forms.add(fragment.replace("+", "-").replace("/", "_"))
    return forms


def _forms(value: str) -> set[str]:
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return forms | _b64_forms(value.encode("utf-8"))


class Redactor:
    """Masks a fixed set of secret values (and their encoded forms) as ``***``."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        secrets = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        forms = set().union(*(_forms(v) for v in secrets)) if secrets else set()
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if forms else None
        self._forms = tuple(f.encode("utf-8") for f in ordered)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def redact_obj(self, obj: Any) -> Any:
        """A copy of ``obj`` with every string inside dicts, lists and tuples redacted."""
        if self._pattern is None:
            return obj
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, Mapping):
            return {self.redact_obj(k): self.redact_obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self.redact_obj(v) for v in obj)
        return obj

    def stream(self) -> StreamRedactor | None:
        """A redactor for one byte stream (a task's output); ``None`` with nothing to mask."""
        return StreamRedactor(self._forms) if self._forms else None

    def logging_filter(self) -> logging.Filter:
        """A filter that redacts log records' rendered messages."""
        redactor = self

        class _Filter(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                record.msg = redactor.redact(record.getMessage())
                record.args = None
                return True

        return _Filter()


class StreamRedactor:
    """Masks secrets in a byte stream that arrives in pieces, a secret split across two
    pieces included: it holds back only the shortest tail that could still begin a secret,
    so everything else (masks included) can be written at once."""

    def __init__(self, forms: Iterable[bytes]) -> None:
        ordered = sorted(set(forms), key=len, reverse=True)
        self._pattern = re.compile(b"|".join(map(re.escape, ordered)))
        self._prefixes = {f[:i] for f in ordered for i in range(1, len(f))}
        self._longest = len(ordered[0]) if ordered else 0
        self._mask = MASK.encode()
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """The masked bytes of ``data`` (after what was held back) that are safe to write."""
        buf = self._held + data
        out = bytearray()
        pos = 0
        while True:
            hold = self._undecided(buf, pos)
            match = self._pattern.search(buf, pos)
            if match is None or match.start() >= hold:
                out += buf[pos:hold]
                self._held = buf[hold:]
                return bytes(out)
            out += buf[pos:match.start()]
            out += self._mask
            pos = match.end()

    def flush(self) -> bytes:
        """The end of the stream: whatever was held back, masked."""
        held, self._held = self._held, b""
        return self._pattern.sub(self._mask, held)

    def _undecided(self, buf: bytes, pos: int) -> int:
        """The first index from which ``buf`` might still be the start of a secret that more
        data would complete (``len(buf)`` when there is none)."""
        for start in range(max(pos, len(buf) - self._longest + 1), len(buf)):
            if buf[start:] in self._prefixes:
                return start
        return len(buf)
