"""A ``random.Random``'s state as compact strict JSON, for strategies' :meth:`state`.

``getstate()`` is 625 integers (the Mersenne Twister's 624 words and its position): 7.3 KB as
a JSON list, rewritten at every checkpoint of a strategy that draws as it goes. Packed as
little-endian 32-bit words in base64 it is 3.3 KB. :func:`load_rng` also takes the list form
that earlier states hold.
"""

from __future__ import annotations

import base64
import random
import struct
from typing import Any


def dump_rng(rng: random.Random) -> list[Any]:
    """``[version, base64 of the packed words, gauss_next]``: strict JSON."""
    version, words, gauss = rng.getstate()
    return [version, base64.b64encode(struct.pack(f"<{len(words)}I", *words)).decode("ascii"), gauss]


def load_rng(rng: random.Random, state: list[Any]) -> None:
    """Put a :func:`dump_rng` state (or the plain ``[version, [words...], gauss]`` form) back into ``rng``."""
    version, words, gauss = state
    if isinstance(words, str):
        raw = base64.b64decode(words)
        words = struct.unpack(f"<{len(raw) // 4}I", raw)
    rng.setstate((version, tuple(int(w) for w in words), gauss))
