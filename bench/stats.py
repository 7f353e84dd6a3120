"""Small pure helpers for the benchmark figures: percentiles and a trend."""
from __future__ import annotations


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(int(round(q / 100 * len(sorted_values) + 0.5)) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]


def distribution(seconds: list[float]) -> dict:
    """count, min, p50, p90, p99, max in milliseconds."""
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)
    ms = {f"p{q}_ms": round(percentile(ordered, q) * 1000, 1) for q in (50, 90, 99)}
    return {"count": len(ordered), "min_ms": round(ordered[0] * 1000, 1), **ms,
            "max_ms": round(ordered[-1] * 1000, 1)}


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, y): messages per second a queue grows by."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return round(sum((t - mean_t) * (y - mean_y) for t, y in points) / var, 2)
