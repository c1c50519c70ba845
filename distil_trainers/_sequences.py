"""Small helpers on token-id sequences, shared by the LLM teachers and the rationale trainer (standard library only,
so that importing them loads nothing else)."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix_length(ids: Sequence[int], other: Sequence[int]) -> int:
    """How many leading tokens ``ids`` and ``other`` share."""
    length = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        length += 1
    return length
