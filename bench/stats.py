"""The one definition of a percentile that every benchmark reports (nearest rank, no interpolation)."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` (0-1) quantile of ``values``; None when there are none."""
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else None


def p50_p90(values: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 0.5), "p90": percentile(ordered, 0.9)}
