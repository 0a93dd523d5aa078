"""Confidence intervals, standard errors, McNemar and the paired bootstrap against known values."""

from __future__ import annotations

import math

import pytest

from bench import stats
from bench.reference import paper_scores
from bench.stats import (
    Score,
    bootstrap_difference,
    compare_items,
    mcnemar,
    score_items,
    standard_error,
    wilson_interval,
)


def _score_test_bound(k: int, n: int, z: float, upper: bool) -> float:
    """Independent Wilson bound: the p0 where |k/n - p0| / sqrt(p0(1-p0)/n) = z, by bisection."""
    phat = k / n
    lo, hi = (phat, 1.0) if upper else (0.0, phat)
    for _ in range(200):
        mid = (lo + hi) / 2
        z_mid = abs(phat - mid) / math.sqrt(mid * (1 - mid) / n) if 0 < mid < 1 else math.inf
        inside = z_mid < z
        if upper:
            lo, hi = (mid, hi) if inside else (lo, mid)
        else:
            lo, hi = (lo, mid) if inside else (mid, hi)
    return (lo + hi) / 2


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.2775),  # published Wilson 95 % values
    (10, 10, 0.7225, 1.0),
    (5, 10, 0.2366, 0.7634),
    (1, 10, 0.0179, 0.4042),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_known_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("k", [0, 1, 318, 637, 1000, 1272, 1273])
def test_wilson_matches_score_test_inversion_for_medqa_sized_runs(k):
    n = 1273  # the MedQA test set
    low, high = wilson_interval(k, n)
    assert low <= k / n <= high
    if k > 0:
        assert low == pytest.approx(_score_test_bound(k, n, 1.96, upper=False), abs=1e-9)
    if k < n:
        assert high == pytest.approx(_score_test_bound(k, n, 1.96, upper=True), abs=1e-9)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(3, 7, z=2.576)[0] < wilson_interval(3, 7)[0]  # 99 % is wider
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_standard_error():
    assert standard_error(5, 10) == pytest.approx(math.sqrt(0.25 / 10))
    assert standard_error(637, 1273) == pytest.approx(0.014013, abs=1e-6)
    assert standard_error(0, 10) == 0.0 and standard_error(0, 0) == 0.0


def test_score_items_per_step_and_overall():
    items = ([{"step": "step1", "correct": True, "pred": "A"}] * 3 + [{"step": "step1", "correct": False,
                                                                         "pred": None}]
             + [{"step": "step2&3", "correct": False, "pred": "B"}] * 2 + [{"step": "", "correct": True, "pred": "C"}])
    scores = score_items(items)
    assert list(scores) == ["step1", "step2&3", "overall"]
    s1 = scores["step1"]
    assert (s1.n, s1.correct, s1.unparseable, s1.accuracy) == (4, 3, 1, 0.75)
    assert (s1.ci_low, s1.ci_high) == wilson_interval(3, 4) and s1.se == standard_error(3, 4)
    overall = scores["overall"]
    assert (overall.n, overall.correct, overall.unparseable) == (7, 4, 1)
    assert Score.from_dict(overall.to_dict()) == overall
    assert set(overall.to_dict()) == {"n", "correct", "unparseable", "accuracy", "ci_low", "ci_high", "se"}
    assert score_items([])["overall"].n == 0


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0),
    (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
    (0, 5, 0.0625),  # 2 / 32
    (3, 3, 1.0),
    (2, 10, 0.03857421875),  # 2 * (1 + 12 + 66) / 4096
])
def test_mcnemar_exact_small_counts(b, c, p):
    assert mcnemar(b, c) == pytest.approx(p, rel=1e-9)
    assert mcnemar(c, b) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("statistic, p", [(3.841459, 0.05), (6.634897, 0.01), (10.827566, 0.001), (0.0, 1.0)])
def test_chi_square_survival_against_table_values(statistic, p):
    assert stats._chi2_1df_sf(statistic) == pytest.approx(p, rel=1e-5)


def test_mcnemar_chi_square_with_continuity_correction_for_large_counts():
    b, c = 40, 20
    x = (abs(b - c) - 1) ** 2 / (b + c)
    assert x == pytest.approx(6.0166667)
    assert mcnemar(b, c) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-12)
    assert mcnemar(b, c) == pytest.approx(0.014171, abs=5e-6)
    # close to the exact test where both are valid, and the switch happens at b + c = 25
    assert mcnemar(b, c) == pytest.approx(stats._binomial_two_sided(c, b + c), rel=0.1)
    assert mcnemar(12, 12) == 1.0 and mcnemar(13, 12) == pytest.approx(1.0)
    assert mcnemar(20, 4) == pytest.approx(stats._binomial_two_sided(4, 24))  # 24 < 25: exact
    with pytest.raises(ValueError):
        mcnemar(-1, 3)


def test_bootstrap_is_seeded_and_contains_the_point_estimate():
    a = [i % 3 != 0 for i in range(120)]  # 80/120
    b = [i % 2 == 0 for i in range(120)]  # 60/120
    diff, low, high = bootstrap_difference(a, b, n_resamples=2000, seed=7)
    assert diff == pytest.approx(20 / 120)
    assert low < diff < high and -1 <= low and high <= 1
    assert bootstrap_difference(a, b, n_resamples=2000, seed=7) == (diff, low, high)
    assert bootstrap_difference(a, b, n_resamples=2000, seed=8) != (diff, low, high)
    # width close to the normal approximation of a paired difference
    deltas = [int(x) - int(y) for x, y in zip(a, b)]
    mean = sum(deltas) / len(deltas)
    sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / len(deltas) / len(deltas))
    assert (high - low) == pytest.approx(2 * 1.96 * sd, rel=0.15)


def test_bootstrap_edges():
    assert bootstrap_difference([], []) == (0.0, 0.0, 0.0)
    assert bootstrap_difference([True, False], [True, False]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        bootstrap_difference([True], [True, False])


def test_compare_items_pairs_on_shared_ids():
    run_a = [{"id": str(i), "correct": i < 30, "pred": "A" if i < 30 else "B"} for i in range(50)]
    run_b = [{"id": str(i), "correct": i < 10 or i >= 47, "pred": "A" if i < 10 else "C"} for i in range(5, 60)]
    cmp = compare_items(run_a, run_b, n_resamples=1000)
    assert cmp.n_shared == 45 and cmp.only_a == 5 and cmp.only_b == 10
    assert (cmp.b, cmp.c) == (20, 3)  # ids 10..29: a right, b wrong; 47..49 the reverse
    assert cmp.acc_a == pytest.approx(25 / 45) and cmp.acc_b == pytest.approx(8 / 45)
    assert cmp.diff == pytest.approx(17 / 45)
    assert cmp.diff_ci[0] < cmp.diff < cmp.diff_ci[1]
    assert cmp.test == "exact" and cmp.p_value == pytest.approx(2 * sum(math.comb(23, i) for i in range(4)) / 2**23)
    assert cmp.disagreements == [str(i) for i in [*range(10, 30), 47, 48, 49]]
    assert cmp.different_preds == [str(i) for i in range(10, 50)]
    assert cmp.to_dict()["diff_ci"] == list(cmp.diff_ci)


def test_paper_reference_scores():
    ref = paper_scores()
    assert "MedAlpaca paper" in ref.source and len(ref.models) == 12
    assert ref.models["MedAlpaca 13b"] == {"step1": 0.473, "step2": 0.477, "step3": 0.602}
    assert ref.models["ChatDoctor (7b)"]["step3"] == 0.148
    assert next(iter(ref.models)) == "LLaMA 7b" and ref.steps() == ["step1", "step2", "step3"]
