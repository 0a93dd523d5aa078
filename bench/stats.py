"""Accuracy with honest uncertainty, and paired comparison of two runs on the same questions.

- `wilson_interval`: the Wilson score interval (95 % with z = 1.96). Unlike the
  normal "p ± 1.96·SE" interval it stays inside [0, 1] and does not collapse to
  a point at 0 % or 100 %, which matters for a few dozen questions per Step.
- `standard_error`: sqrt(p(1-p)/n), the figure leaderboards print beside accuracy.
- `mcnemar`: two runs scored on the same questions differ only through the
  questions one got right and the other wrong (b: A right and B wrong, c: the
  reverse). Two-sided p-value: exact binomial (b ~ Bin(b+c, 1/2), doubled tail,
  capped at 1) when b + c < 25, else the chi-square statistic with continuity
  correction (|b-c|-1)²/(b+c) on 1 degree of freedom, p = erfc(sqrt(x/2)).
- `bootstrap_difference`: paired percentile bootstrap of acc(A) - acc(B):
  questions are resampled with replacement (pairs kept together), seeded, so the
  same call gives the same interval.
- `compare_items`: both of the above on the ids two runs share.

Standard library only: the GUI imports this.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "EXACT_BELOW",
    "Comparison",
    "Score",
    "bootstrap_difference",
    "compare_items",
    "mcnemar",
    "score_items",
    "standard_error",
    "wilson_interval",
]

Z95 = 1.96
EXACT_BELOW = 25
"""McNemar uses the exact binomial test when b + c is below this, else chi-square with continuity correction."""


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for correct/n; (0.0, 1.0) when n is 0 (nothing is known)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be between 0 and n (got {correct} of {n})")
    p = correct / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def standard_error(correct: int, n: int) -> float:
    """sqrt(p(1-p)/n) of the accuracy; 0.0 when n is 0."""
    if n <= 0:
        return 0.0
    p = correct / n
    return math.sqrt(p * (1 - p) / n)


@dataclass
class Score:
    """Accuracy of one Step (or overall) with its 95 % Wilson interval and standard error."""

    n: int
    correct: int
    unparseable: int
    accuracy: float
    ci_low: float
    ci_high: float
    se: float

    @classmethod
    def of(cls, correct: int, n: int, unparseable: int = 0) -> Score:
        low, high = wilson_interval(correct, n)
        return cls(n=n, correct=correct, unparseable=unparseable, accuracy=correct / n if n else 0.0,
                   ci_low=low, ci_high=high, se=standard_error(correct, n))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        return cls(**{k: data[k] for k in ("n", "correct", "unparseable", "accuracy", "ci_low", "ci_high", "se")})


def score_items(items: Iterable[dict[str, Any]]) -> dict[str, Score]:
    """Scores per Step (sorted; items without a step count only overall) and "overall" (always last)."""
    tallies: dict[str, list[int]] = {}
    total = [0, 0, 0]
    for item in items:
        right = bool(item.get("correct"))
        unparsed = item.get("pred") is None
        step = str(item.get("step") or "")
        for bucket in ([tallies.setdefault(step, [0, 0, 0])] if step else []) + [total]:
            bucket[0] += 1
            bucket[1] += right
            bucket[2] += unparsed
    out = {step: Score.of(c, n, u) for step, (n, c, u) in sorted(tallies.items())}
    out["overall"] = Score.of(total[1], total[0], total[2])
    return out


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair trials (doubled smaller tail, capped at 1)."""
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _chi2_1df_sf(x: float) -> float:
    """P(X > x) for a chi-square variable with 1 degree of freedom."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2))


def mcnemar(b: int, c: int) -> float:
    """Two-sided McNemar p-value; exact binomial when b + c < 25, else chi-square with continuity correction."""
    if b < 0 or c < 0:
        raise ValueError("b and c are counts and cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    if n < EXACT_BELOW:
        return _binomial_two_sided(b, n)
    return min(1.0, _chi2_1df_sf((abs(b - c) - 1) ** 2 / n))


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted values, q in [0, 100]."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_difference(a: list[bool], b: list[bool], n_resamples: int = 10000,
                         seed: int = 0) -> tuple[float, float, float]:
    """(acc(a) - acc(b), 2.5th, 97.5th percentile) from a paired, seeded bootstrap over questions."""
    if len(a) != len(b):
        raise ValueError(f"paired lists differ in length ({len(a)} and {len(b)})")
    n = len(a)
    if n == 0:
        return 0.0, 0.0, 0.0
    deltas = [int(bool(x)) - int(bool(y)) for x, y in zip(a, b)]
    diff = sum(deltas) / n
    if not any(deltas):
        return diff, diff, diff
    rng = random.Random(seed)
    draws = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(max(1, n_resamples)))
    return diff, _percentile(draws, 2.5), _percentile(draws, 97.5)


def bootstrap_average_difference(pairs: dict[str, tuple[list[bool], list[bool]]], n_resamples: int = 2000,
                                 seed: int = 0) -> tuple[float, float, float]:
    """(mean over tasks of acc_a - acc_b, 2.5th, 97.5th percentile), resampling questions within each task."""
    tasks = [t for t, (a, _) in pairs.items() if a]
    if not tasks:
        return 0.0, 0.0, 0.0
    deltas = {t: [int(x) - int(y) for x, y in zip(*pairs[t], strict=True)] for t in tasks}
    diff = sum(sum(d) / len(d) for d in deltas.values()) / len(tasks)
    if not any(any(d) for d in deltas.values()):
        return diff, diff, diff
    rng = random.Random(seed)
    draws = sorted(sum(sum(rng.choices(d, k=len(d))) / len(d) for d in deltas.values()) / len(tasks)
                   for _ in range(max(1, n_resamples)))
    return diff, _percentile(draws, 2.5), _percentile(draws, 97.5)


@dataclass
class Comparison:
    """Run A against run B on the questions both scored (paired by id)."""

    n_shared: int
    acc_a: float
    acc_b: float
    diff: float
    """acc_a - acc_b on the shared questions."""
    diff_ci: tuple[float, float]
    """95 % paired bootstrap percentile interval of `diff`."""
    b: int
    """A right, B wrong."""
    c: int
    """A wrong, B right."""
    p_value: float
    test: str
    """"exact" (binomial) or "chi-square" (with continuity correction)."""
    disagreements: list[str] = field(default_factory=list)
    """Ids one run got right and the other wrong (b + c of them), in run A's order."""
    different_preds: list[str] = field(default_factory=list)
    """Ids where the two runs picked different letters (incl. one unparseable)."""
    only_a: int = 0
    only_b: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["diff_ci"] = list(self.diff_ci)
        return data


def compare_items(items_a: Iterable[dict[str, Any]], items_b: Iterable[dict[str, Any]], *,
                  n_resamples: int = 10000, seed: int = 0) -> Comparison:
    """Paired comparison on shared ids: McNemar p-value and a bootstrap interval of the accuracy difference."""
    by_id_b = {str(item["id"]): item for item in items_b}
    shared: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    seen_a: set[str] = set()
    for item in items_a:
        key = str(item["id"])
        seen_a.add(key)
        if key in by_id_b:
            shared.append((key, item, by_id_b[key]))
    right_a = [bool(x.get("correct")) for _, x, _ in shared]
    right_b = [bool(y.get("correct")) for _, _, y in shared]
    b = sum(1 for x, y in zip(right_a, right_b) if x and not y)
    c = sum(1 for x, y in zip(right_a, right_b) if y and not x)
    n = len(shared)
    diff, low, high = bootstrap_difference(right_a, right_b, n_resamples=n_resamples, seed=seed)
    return Comparison(
        n_shared=n,
        acc_a=sum(right_a) / n if n else 0.0,
        acc_b=sum(right_b) / n if n else 0.0,
        diff=diff, diff_ci=(low, high), b=b, c=c, p_value=mcnemar(b, c),
        test="exact" if b + c < EXACT_BELOW else "chi-square",
        disagreements=[k for k, x, y in shared if bool(x.get("correct")) != bool(y.get("correct"))],
        different_preds=[k for k, x, y in shared if x.get("pred") != y.get("pred")],
        only_a=len(seen_a) - n, only_b=len(by_id_b) - n)
