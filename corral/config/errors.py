"""ConfigError: every way a configuration can be wrong, reported at once."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """The configuration cannot be used.

    Each problem is one line, ``<where>: <key>: <what is wrong>``, where ``<where>``
    is ``file:line``, ``env NAME`` or ``--flag``. ``problems`` keeps the lines.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            text = f"{len(self.problems)} configuration problems:\n{lines}"
        super().__init__(text)
