"""Optimal-transport interpolation between a reference and an anchor schedule."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from comfyui_otcache.otcache_core.interpolate import (
    budget_for_speedup,
    budget_range,
    interpolate,
    interpolation_weight,
    speedup_for_budget,
)
from comfyui_otcache.otcache_core.schedule import Schedule, ScheduleError
from comfyui_otcache.otcache_core.warp import resample

# Published LeMiCa FLUX.1-dev schedules at 50 steps (schedules/lemica-flux1-dev.json).
FLUX_REF = Schedule(
    50, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 30, 35, 39, 42, 44, 45, 46, 47, 48, 49],
    model="flux1-dev", source="published",
)
FLUX_ANCHOR = Schedule(50, [0, 1, 3, 7, 14, 21, 28, 35, 42, 49], model="flux1-dev", source="published")


@st.composite
def schedule_pairs(draw, min_steps: int = 3, max_steps: int = 60) -> tuple[Schedule, Schedule]:
    """(reference, anchor) at one N with K_anchor < K_ref; inner steps from random bit masks."""
    n = draw(st.integers(min_steps, max_steps))
    width = n - 2

    def one() -> Schedule:
        a, b = draw(st.lists(st.integers(0, 2**width - 1), min_size=2, max_size=2))
        mask = draw(st.sampled_from([a, a & b, a | b]))
        return Schedule(n, [0, *(i + 1 for i in range(width) if mask >> i & 1), n - 1])

    first, second = one(), one()
    assume(first.budget != second.budget)
    return (first, second) if first.budget > second.budget else (second, first)


# ----------------------------------------------------------------- pinned by hand


def test_flux_k20_by_hand():
    """K = 20 between the FLUX.1-dev reference (K_r = 26) and anchor (K_a = 10), N = 50.

    K < K_r, so the reference -> anchor segment: lambda = (26 - 20) / (26 - 10) = 6/16 = 3/8.
    u_k = k/19. In steps, 49 Q_ref(u_k) = R(25k/19) and 49 Q_anchor(u_k) = A(9k/19), where
    R(x), A(x) interpolate the reference and anchor lists linearly at fractional index x
    (e.g. R(10.526) = 10 + 0.526 * (12 - 10) = 11.053). p_k = 5/8 R + 3/8 A:

        k   25k/19   R       9k/19   A       p_k     round
        0    0.000   0.000   0.000   0.000   0.000    0
        1    1.316   1.316   0.474   0.474   1.000    1
        2    2.632   2.632   0.947   0.947   2.000    2
        3    3.947   3.947   1.421   1.842   3.158    3
        4    5.263   5.263   1.895   2.789   4.336    4
        5    6.579   6.579   2.368   4.474   5.789    6
        6    7.895   7.895   2.842   6.368   7.322    7
        7    9.211   9.211   3.316   9.211   9.211    9
        8   10.526  11.053   3.789  12.526  11.605   12
        9   11.842  14.526   4.263  15.842  15.020   15
       10   13.158  18.316   4.737  19.158  18.632   19
       11   14.474  22.368   5.211  22.474  22.408   22
       12   15.789  28.947   5.684  25.789  27.763   28
       13   17.105  35.421   6.158  29.105  33.053   33
       14   18.421  40.263   6.632  32.421  37.322   37
       15   19.737  43.474   7.105  35.737  40.572   41
       16   21.053  45.053   7.579  39.053  42.803   43
       17   22.368  46.368   8.053  42.368  44.868   45
       18   23.684  47.684   8.526  45.684  46.934   47
       19   25.000  49.000   9.000  49.000  49.000   49

    The rounded targets are already distinct and increasing, so the forward pass
    (s_k = max(r_k, s_{k-1} + 1)) and the backward pass (s_k = min(s_k, s_{k+1} - 1))
    change nothing. (p_1 = 5/8 * 25/19 + 3/8 * 9/19 = 152/152 = 1 exactly.)
    """
    s = interpolate(FLUX_REF, FLUX_ANCHOR, 20)
    assert list(s.compute) == [0, 1, 2, 3, 4, 6, 7, 9, 12, 15, 19, 22, 28, 33, 37, 41, 43, 45, 47, 49]
    assert s.params["lambda"] == 0.375
    assert s.params["segment"] == "reference-anchor"


def test_flux_k15_by_hand():
    """K = 15, same pair: lambda = (26 - 15) / (26 - 10) = 11/16 = 0.6875.

    u_k = k/14; 49 Q_ref(u_k) = R(25k/14), 49 Q_anchor(u_k) = A(9k/14); p_k = 5/16 R + 11/16 A
    (e.g. k = 6: R(10.714) = 10 + 0.714 * 2 = 11.429, A(3.857) = 7 + 0.857 * 7 = 13,
    p = 3.571 + 8.938 = 12.509 -> 13):

        k   25k/14   R       9k/14   A       p_k     round
        0    0.000   0.000   0.000   0.000   0.000    0
        1    1.786   1.786   0.643   0.643   1.000    1
        2    3.571   3.571   1.286   1.571   2.196    2
        3    5.357   5.357   1.929   2.857   3.638    4
        4    7.143   7.143   2.571   5.286   5.866    6
        5    8.929   8.929   3.214   8.500   8.634    9
        6   10.714  11.429   3.857  13.000  12.509   13
        7   12.500  16.500   4.500  17.500  17.188   17
        8   14.286  21.429   5.143  22.000  21.821   22
        9   16.071  30.357   5.786  26.500  27.705   28
       10   17.857  38.429   6.429  31.000  33.321   33
       11   19.643  43.286   7.071  35.500  37.933   38
       12   21.429  45.429   7.714  40.000  41.696   42
       13   23.214  47.214   8.357  44.500  45.348   45
       14   25.000  49.000   9.000  49.000  49.000   49

    Again no collisions, so the repair passes change nothing.
    """
    s = interpolate(FLUX_REF, FLUX_ANCHOR, 15)
    assert list(s.compute) == [0, 1, 2, 4, 6, 9, 13, 17, 22, 28, 33, 38, 42, 45, 49]
    assert s.params["lambda"] == 0.6875


def _exact_interpolation(reference: Schedule, anchor: Schedule, budget: int) -> list[int]:
    """An independent implementation in exact rational arithmetic (linear mapping)."""
    n, k_r, k_a = reference.steps, reference.budget, anchor.budget

    def at(steps: tuple[int, ...], x: Fraction) -> Fraction:  # linear interpolation at index x
        j = math.floor(x)
        return Fraction(steps[-1]) if j >= len(steps) - 1 else steps[j] + (x - j) * (steps[j + 1] - steps[j])

    def q(steps: tuple[int, ...], u: Fraction) -> Fraction:
        return at(steps, u * (len(steps) - 1))

    if budget >= k_r:
        lam = Fraction(n - budget, n - k_r) if n > k_r else Fraction(1)  # a full reference is a point
        first, second = tuple(range(n)), reference.compute
    else:
        lam = Fraction(k_r - budget, k_r - k_a)
        first, second = reference.compute, anchor.compute
    targets = [
        math.floor((1 - lam) * q(first, Fraction(k, budget - 1)) + lam * q(second, Fraction(k, budget - 1)) + Fraction(1, 2))
        for k in range(budget)
    ]
    steps = [0] * budget
    for k in range(1, budget - 1):
        steps[k] = max(targets[k], steps[k - 1] + 1)
    steps[-1] = n - 1
    for k in range(budget - 2, 0, -1):
        steps[k] = min(steps[k], steps[k + 1] - 1)
    return steps


def test_every_flux_budget_agrees_with_exact_arithmetic():
    for budget in range(10, 51):
        assert list(interpolate(FLUX_REF, FLUX_ANCHOR, budget).compute) == _exact_interpolation(
            FLUX_REF, FLUX_ANCHOR, budget
        ), budget


@settings(max_examples=60)
@given(schedule_pairs(max_steps=30), st.data())
def test_random_pairs_agree_with_exact_arithmetic(pair, data):
    reference, anchor = pair
    budget = data.draw(st.integers(anchor.budget, reference.steps))
    assert list(interpolate(reference, anchor, budget).compute) == _exact_interpolation(reference, anchor, budget)


# ----------------------------------------------------------------- endpoints and validity


@pytest.mark.parametrize("mapping", ["linear", "log"])
def test_flux_endpoints_are_exact(mapping):
    assert interpolate(FLUX_REF, FLUX_ANCHOR, 26, mapping=mapping).compute == FLUX_REF.compute
    assert interpolate(FLUX_REF, FLUX_ANCHOR, 10, mapping=mapping).compute == FLUX_ANCHOR.compute
    assert interpolate(FLUX_REF, FLUX_ANCHOR, 50, mapping=mapping).is_full


@settings(max_examples=80)
@given(schedule_pairs(max_steps=200), st.sampled_from(["linear", "log"]))
def test_endpoints_are_exact_for_any_pair(pair, mapping):
    reference, anchor = pair
    n = reference.steps
    assert interpolate(reference, anchor, reference.budget, mapping=mapping).compute == reference.compute
    assert interpolate(reference, anchor, anchor.budget, mapping=mapping).compute == anchor.compute
    assert interpolate(reference, anchor, n, mapping=mapping).compute == tuple(range(n))


@settings(max_examples=40)
@given(schedule_pairs(max_steps=60), st.sampled_from(["linear", "log"]))
def test_every_budget_in_range_gives_exactly_k_valid_steps(pair, mapping):
    reference, anchor = pair
    n = reference.steps
    for budget in range(anchor.budget, n + 1):
        s = interpolate(reference, anchor, budget, mapping=mapping)
        assert s.steps == n and s.budget == budget
        assert s.compute[0] == 0 and s.compute[-1] == n - 1
        assert all(a < b for a, b in zip(s.compute, s.compute[1:]))


def test_result_metadata():
    s = interpolate(FLUX_REF.with_metadata(sampler="euler", scheduler="simple"), FLUX_ANCHOR, 40)
    assert (s.source, s.model, s.sampler, s.scheduler) == ("interpolated", "flux1-dev", "euler", "simple")
    assert s.params["segment"] == "full-reference"
    assert s.params["lambda"] == pytest.approx(10 / 24)  # (N - K) / (N - K_r) = (50 - 40) / (50 - 26)
    assert s.params["mapping"] == "linear"
    assert s.params["reference"] == str(FLUX_REF) and s.params["anchor"] == str(FLUX_ANCHOR)
    assert "note" not in s.params
    assert Schedule.from_json(s.to_json()).to_dict() == s.to_dict()


def test_model_falls_back_to_the_anchor():
    s = interpolate(FLUX_REF.with_metadata(model=""), FLUX_ANCHOR, 20)
    assert s.model == "flux1-dev"


# ----------------------------------------------------------------- mappings


def test_log_mapping_weights():
    assert interpolation_weight(20, 26, 10, 50, "log") == (
        "reference-anchor", pytest.approx((math.log(26) - math.log(20)) / (math.log(26) - math.log(10)))
    )
    assert interpolation_weight(40, 26, 10, 50, "log") == (
        "full-reference", pytest.approx((math.log(50) - math.log(40)) / (math.log(50) - math.log(26)))
    )
    # lambda is linear in log K: halfway in log K between the anchor and the reference
    assert interpolation_weight(math.sqrt(26 * 10), 26, 10, 50, "log")[1] == pytest.approx(0.5)


def test_log_mapping_stays_nearer_the_larger_budget():
    # -log K is convex, so the log-mapped lambda lies below the linear chord on both
    # segments: the result stays closer to the reference (resp. full compute) for longer.
    for budget in range(11, 26):
        assert interpolation_weight(budget, 26, 10, 50, "log")[1] < interpolation_weight(budget, 26, 10, 50)[1]
    for budget in range(27, 50):
        assert interpolation_weight(budget, 26, 10, 50, "log")[1] < interpolation_weight(budget, 26, 10, 50)[1]
    s = interpolate(FLUX_REF, FLUX_ANCHOR, 20, mapping="log")
    assert s.params["mapping"] == "log" and s.budget == 20


def test_full_reference_is_a_point_not_a_segment():
    full = Schedule.full(10)
    s = interpolate(full, Schedule(10, [0, 4, 9]), 10)
    assert s.is_full
    assert interpolation_weight(10, 10, 3, 10) == ("full-reference", 1.0)


# ----------------------------------------------------------------- step counts


def test_anchor_with_other_steps_is_resampled_to_the_reference():
    anchor_28 = resample(FLUX_ANCHOR, 28)  # K = round(10 * 28 / 50) = 6
    assert anchor_28.budget == 6
    back = resample(anchor_28, 50)  # K = round(6 * 50 / 28) = round(10.71) = 11
    s = interpolate(FLUX_REF, anchor_28, back.budget)
    assert s.steps == 50 and s.compute == back.compute
    assert "anchor resampled from 28 to the reference's 50 steps (budget 6 -> 11)" in s.params["note"]
    assert budget_range(FLUX_REF, anchor_28) == (11, 50)


def test_steps_resamples_both_and_the_budget_counts_new_steps():
    ref_28, anchor_28 = resample(FLUX_REF, 28), resample(FLUX_ANCHOR, 28)
    assert (ref_28.budget, anchor_28.budget) == (15, 6)
    assert interpolate(FLUX_REF, FLUX_ANCHOR, 15, steps=28).compute == ref_28.compute
    assert interpolate(FLUX_REF, FLUX_ANCHOR, 6, steps=28).compute == anchor_28.compute
    s = interpolate(FLUX_REF, FLUX_ANCHOR, 10, steps=28)
    assert s.steps == 28 and s.budget == 10
    assert s.params["note"] == "reference and anchor resampled from 50 to 28 steps (budgets 26 -> 15, 10 -> 6)"
    assert s.params["reference"] == str(ref_28)
    assert budget_range(FLUX_REF, FLUX_ANCHOR, steps=28) == (6, 28)
    assert "note" not in interpolate(FLUX_REF, FLUX_ANCHOR, 20, steps=50).params


def test_resampling_to_very_few_steps_may_merge_the_budgets():
    # At 4 steps both round to K = 2 (26*4/50 = 2.08, 10*4/50 = 0.8 -> clipped to 2).
    assert budget_range(FLUX_REF, FLUX_ANCHOR, steps=4) == (2, 4)
    assert interpolate(FLUX_REF, FLUX_ANCHOR, 2, steps=4).compute == (0, 3)
    assert interpolate(FLUX_REF, FLUX_ANCHOR, 4, steps=4).is_full


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: interpolate(FLUX_REF, FLUX_ANCHOR, 9),
         r"budget 9 is out of range: with reference budget 26 and anchor budget 10 at 50 steps, "
         r"choose a budget in \[10, 50\] \(speedup 1.00x to 5.00x\)"),
        (lambda: interpolate(FLUX_REF, FLUX_ANCHOR, 51), r"budget 51 is out of range: .*choose a budget in \[10, 50\]"),
        (lambda: interpolate(FLUX_REF, FLUX_ANCHOR, 30, steps=28), (r"budget 30 is out of range: with reference budget "
                                                                     r"15 and anchor budget 6 at 28 steps")),
        (lambda: interpolate(FLUX_ANCHOR, FLUX_REF, 20),
         r"the anchor's budget \(26 of 50 steps\) must be below the reference's \(10\); swap them"),
        (lambda: interpolate(FLUX_REF, FLUX_REF, 20), r"the anchor's budget \(26 of 50 steps\) must be below the reference's \(26\)"),
        (lambda: interpolate(FLUX_REF, FLUX_ANCHOR, 20, mapping="cubic"), r"mapping must be one of linear, log; got 'cubic'"),
        (lambda: interpolate(FLUX_REF, FLUX_ANCHOR, True), r"budget must be an integer; got the boolean True"),
        (lambda: interpolate(FLUX_REF, FLUX_ANCHOR, 20.5), r"budget must be an integer; got 20.5"),
        (lambda: interpolate(FLUX_REF, FLUX_ANCHOR, 20, steps=1), r"steps must be at least 2"),
        (lambda: interpolate(str(FLUX_REF), FLUX_ANCHOR, 20), r"the reference must be a Schedule; got str"),
        (lambda: interpolate(FLUX_REF, None, 20), r"the anchor must be a Schedule; got NoneType"),
    ],
)
def test_interpolate_errors(call, message):
    with pytest.raises(ScheduleError, match=message):
        call()


# ----------------------------------------------------------------- budget and speedup


def test_budget_for_speedup():
    assert budget_for_speedup(50, 4.5) == 11  # 11.11
    assert budget_for_speedup(50, 1.0) == 50
    assert budget_for_speedup(50, 4) == 13  # 12.5 ties up
    assert budget_for_speedup(50, 100.0) == 2  # clipped
    assert speedup_for_budget(50, 10) == 5.0


@given(st.integers(2, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n))))
def test_budget_for_speedup_inverts_speedup_for_budget(nk):
    n, k = nk
    assert budget_for_speedup(n, speedup_for_budget(n, k)) == k


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: budget_for_speedup(50, 0.5), r"speedup must be at least 1 \(1 = compute every step\); got 0.5"),
        (lambda: budget_for_speedup(50, float("nan")), r"speedup must be a finite number >= 1; got nan"),
        (lambda: budget_for_speedup(50, "fast"), r"speedup must be a finite number >= 1; got 'fast'"),
        (lambda: budget_for_speedup(1, 2.0), r"steps must be at least 2"),
        (lambda: speedup_for_budget(50, 51), r"budget 51 is out of range for 50 steps \(valid 2..50\)"),
    ],
)
def test_speedup_errors(call, message):
    with pytest.raises(ScheduleError, match=message):
        call()
