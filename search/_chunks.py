"""Append-only logs in a strategy's state, written as frozen JSON chunks plus a short tail.

A strategy's per-round or per-trial log grows with the run, and the service stores the
state at every trial start and end. :class:`FrozenChunks` turns each full run of ``size``
entries into one JSON string that never changes again; the job store keeps long strings once
by content (``service.store``), so a log entry is written about once instead of at every
checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any


class FrozenChunks:
    """The frozen part of one append-only log (entries ``0 .. frozen-1``, as JSON strings).

    Args:
        size: Entries per chunk.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.texts: list[str] = []
        self.frozen = 0

    def dump(self, entries: Sequence[Any], encode: Callable[[Any], Any]) -> tuple[list[str], list[Any]]:
        """``(chunks, tail)`` for a state: every full chunk frozen (once), the rest encoded."""
        while self.frozen + self.size <= len(entries):
            run = entries[self.frozen : self.frozen + self.size]
            self.texts.append(json.dumps([encode(e) for e in run]))
            self.frozen += len(run)
        return list(self.texts), [encode(e) for e in entries[self.frozen :]]

    def load(self, texts: Sequence[str], tail: Sequence[Any]) -> list[Any]:
        """The encoded entries of a state's ``(chunks, tail)``; later dumps keep these chunks as they are."""
        self.texts = [str(t) for t in texts]
        frozen = [e for text in self.texts for e in json.loads(text)]
        self.frozen = len(frozen)
        return frozen + list(tail)
