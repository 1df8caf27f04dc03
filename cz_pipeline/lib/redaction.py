"""Scrub secrets from error text before it can reach a log, metadata or a file.

Both HTTP clients and the PostgreSQL source turn every exception of httpx and the database
driver into a message through one :class:`Redactor`, and raise their own error ``from None`` so
the driver's unredacted exception is not chained along into Dagster's event log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

REDACTED = "[redacted]"
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_SHORTEST_PART = 8
"""Pieces of a secret split at whitespace are scrubbed too when at least this long."""


def _spellings(secret: str) -> set[str]:
    """How a secret may show up in a message: as is, stripped, escaped as ``repr`` writes it,
    the password of a URL, and its long whitespace-separated pieces."""
    core = secret.strip()
    found = {secret, core, repr(secret)[1:-1], repr(secret.encode())[2:-1]}
    found.update(part for part in secret.split() if len(part) >= _SHORTEST_PART)
    if "://" in core:
        try:
            password = urlsplit(core).password
        except ValueError:
            password = None
        if password:
            found.update({password, unquote(password)})
    return {spelling for spelling in found if spelling}


@dataclass(frozen=True)
class Redactor:
    """Replaces every spelling of its secrets, and any ``scheme://user:password@`` password,
    with ``[redacted]``; ``patterns`` scrub secrets known only by their shape."""

    spellings: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(
        cls, secrets: Iterable[str | None], patterns: Iterable[re.Pattern[str]] = ()
    ) -> Redactor:
        found: set[str] = set()
        for secret in secrets:
            if secret:
                found |= _spellings(secret)
        # Longest first, so a secret is not half-replaced by one of its own pieces.
        return cls(tuple(sorted(found, key=len, reverse=True)), tuple(patterns))

    def text(self, text: str) -> str:
        for spelling in self.spellings:
            text = text.replace(spelling, REDACTED)
        for pattern in self.patterns:
            text = pattern.sub(REDACTED, text)
        return _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)

    def error(self, error: BaseException) -> str:
        """``Type: message`` of an exception, scrubbed."""
        return f"{type(error).__name__}: {self.text(str(error)) or 'no detail'}"
