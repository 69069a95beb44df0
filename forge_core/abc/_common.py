"""What every plugin interface shares: the answer to "can this backend be used here?"."""

from __future__ import annotations

import attrs


@attrs.frozen
class Availability:
    """Whether a backend is usable on this machine; ``reason`` is one line when it is not."""

    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)

    def __str__(self) -> str:
        return "yes" if self.ok else self.reason
