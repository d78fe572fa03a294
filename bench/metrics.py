"""Reading valux's Prometheus histograms from ``GET /metrics`` (merged over processes)."""

from __future__ import annotations

import math
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from bench.common import histogram_quantile


def histogram_buckets(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets summed over every process, total count, total sum) of ``name``."""
    buckets: dict[float, float] = defaultdict(float)
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                buckets[float(sample.labels["le"])] += sample.value
            elif sample.name == name + "_count":
                count += sample.value
            elif sample.name == name + "_sum":
                total += sample.value
    return sorted(buckets.items()), count, total


def histogram_summary(text: str, name: str, scale: float = 1000.0) -> dict[str, float]:
    """n, p50, p99 (bucket-interpolated) and mean of a seconds histogram, in ms."""
    buckets, count, total = histogram_buckets(text, name)
    if not count:
        return {}
    p50 = histogram_quantile(buckets, 0.50)
    p99 = histogram_quantile(buckets, 0.99)
    return {
        "n": count,
        "p50": p50 * scale if not math.isnan(p50) else math.nan,
        "p99": p99 * scale if not math.isnan(p99) else math.nan,
        "mean": total / count * scale,
    }
