"""Warps: quantile functions of schedules, discretization, resampling."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import schedules

from comfyui_otcache.otcache_core.schedule import Schedule, ScheduleError
from comfyui_otcache.otcache_core.warp import (
    Warp,
    budget_positions,
    mix_warps,
    resample,
    resampled_budget,
    schedule_from_warp,
    warp,
)

FLUX_REF = Schedule(50, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 30, 35, 39, 42, 44, 45, 46, 47, 48, 49])




@st.composite
def warps(draw) -> Warp:
    """Random monotone piecewise linear warps, flat pieces and jumps-like steep pieces included."""
    m = draw(st.integers(1, 8))
    du = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=m, max_size=m)))
    dq = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=m, max_size=m)))
    if dq.sum() == 0:
        dq[-1] = 1.0
    u = np.concatenate([[0.0], np.cumsum(du) / du.sum()])
    q = np.concatenate([[0.0], np.cumsum(dq) / dq.sum()])
    q = np.clip(np.maximum.accumulate(q), 0.0, 1.0)  # cumsum/sum may overshoot 1 by an ulp
    u[-1] = q[-1] = 1.0
    return Warp(tuple(u), tuple(q))


# ----------------------------------------------------------------- the warp of a schedule


def test_warp_knots_of_a_schedule():
    w = warp(Schedule(10, [0, 1, 3, 9]))
    assert w.knots_u == pytest.approx((0, 1 / 3, 2 / 3, 1))
    assert w.knots_q == pytest.approx((0, 1 / 9, 3 / 9, 1))
    # between knots it is linear: halfway between u=1/3 and 2/3 lies step 2 of 9
    assert w(0.5) == pytest.approx(2 / 9)
    assert isinstance(w(0.5), float)
    assert w(0.0) == 0.0 and w(1.0) == 1.0


def test_warp_is_vectorized_and_clamps():
    w = warp(Schedule(5, [0, 2, 4]))
    out = w(np.array([[0.0, 0.25], [0.5, 1.0]]))
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    assert w(-1.0) == 0.0 and w(2.0) == 1.0


@settings(max_examples=80)
@given(schedules())
def test_warps_are_monotone_from_0_to_1(s):
    w = warp(s)
    grid = np.linspace(0.0, 1.0, 501)
    values = w(grid)
    assert values[0] == 0.0 and values[-1] == 1.0
    assert np.all(np.diff(values) >= 0)


@pytest.mark.parametrize(
    "u, q, message",
    [
        ((0.0,), (0.0,), r"at least 2 knots"),
        ((0.0, 1.0), (0.0, 0.5, 1.0), r"two equally long knot lists"),
        ((0.0, 0.5, 0.5, 1.0), (0.0, 0.1, 0.2, 1.0), r"positions must increase strictly from 0 to 1"),
        ((0.1, 1.0), (0.0, 1.0), r"positions must increase strictly from 0 to 1"),
        ((0.0, 0.5, 1.0), (0.0, 0.6, 0.4), r"values must not decrease and must run from 0 to 1"),
        ((0.0, 1.0), (0.0, 0.9), r"values must not decrease and must run from 0 to 1"),
        ((0.0, 1.0), (0.0, float("nan")), r"knots must be finite"),
    ],
)
def test_invalid_warps(u, q, message):
    with pytest.raises(ScheduleError, match=message):
        Warp(u, q)


def test_warp_needs_a_schedule():
    with pytest.raises(ScheduleError, match=r"warp\(\) needs a Schedule; got str"):
        warp("50:0,49")  # type: ignore[arg-type]


# ----------------------------------------------------------------- discretization


@settings(max_examples=250)
@given(schedules())
def test_round_trip_is_exact_for_every_schedule(s):
    assert schedule_from_warp(warp(s), s.budget, s.steps).compute == s.compute


def test_round_trip_of_the_published_reference():
    assert schedule_from_warp(warp(FLUX_REF), 26, 50) == FLUX_REF


def test_schedule_from_warp_forward_repair_by_hand():
    """Q(u) = u^3, K = 5, N = 10.

    u_k = 0, 1/4, 1/2, 3/4, 1; p_k = 9 u_k^3 = 0, 0.141, 1.125, 3.797, 9
    rounded 0, 0, 1, 4, 9; forward pass: s_1 = max(0, 0+1) = 1, s_2 = max(1, 1+1) = 2,
    s_3 = max(4, 3) = 4, s_4 = 9; the backward pass changes nothing.
    """
    s = schedule_from_warp(lambda u: u**3, 5, 10)
    assert s.compute == (0, 1, 2, 4, 9)


def test_schedule_from_warp_backward_repair_by_hand():
    """Q(u) = 1 - (1-u)^3, K = 5, N = 10.

    p_k = 9 (0, 37/64, 7/8, 63/64, 1) = 0, 5.203, 7.875, 8.859, 9; rounded 0, 5, 8, 9, 9;
    forward pass: 0, 5, 8, 9 and s_4 = N-1 = 9 (a collision at the end); backward pass:
    s_3 = min(9, 9-1) = 8, s_2 = min(8, 8-1) = 7, s_1 = min(5, 7-1) = 5.
    """
    s = schedule_from_warp(lambda u: 1 - (1 - u) ** 3, 5, 10)
    assert s.compute == (0, 5, 7, 8, 9)


def test_ties_round_up():
    # identity at K = 3, N = 4: p = 0, 1.5, 3 -> the tie goes to step 2
    assert schedule_from_warp(Warp.identity(), 3, 4).compute == (0, 2, 3)


def test_float_noise_never_decides_a_tie():
    """Identity warp at N = 46, K = 11: p_k = 4.5 k, a tie at every odd k. In floats
    (k/10) * 45 lands a hair below or above x.5 depending on k; every tie must still round
    up, as Schedule.uniform does in exact integers. Checked for all N <= 50 and K <= N and
    for more of the 392 (N, K) pairs up to N = 300 that have such noisy ties."""
    assert schedule_from_warp(Warp.identity(), 11, 46).compute == (0, 5, 9, 14, 18, 23, 27, 32, 36, 41, 45)
    pairs = [(n, k) for n in range(2, 51) for k in range(2, n + 1)]
    for n, k in pairs + [(46, 21), (46, 31), (56, 23), (56, 45), (70, 47), (76, 31)]:
        assert schedule_from_warp(Warp.identity(), k, n).compute == Schedule.uniform(n, k).compute, (n, k)


@settings(max_examples=100)
@given(st.integers(2, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n))))
def test_identity_warp_gives_uniform_and_full(nk):
    n, k = nk
    assert schedule_from_warp(Warp.identity(), k, n).compute == Schedule.uniform(n, k).compute
    assert schedule_from_warp(Warp.identity(), n, n).is_full


@settings(max_examples=150)
@given(warps(), st.integers(2, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n))))
def test_any_monotone_warp_gives_exactly_k_distinct_steps(w, nk):
    n, k = nk
    s = schedule_from_warp(w, k, n)
    assert s.budget == k and s.steps == n
    assert s.compute[0] == 0 and s.compute[-1] == n - 1
    assert all(a < b for a, b in zip(s.compute, s.compute[1:]))


def test_schedule_from_warp_carries_metadata():
    s = schedule_from_warp(Warp.identity(), 3, 5, model="m", source="anchor", params={"trial": 4})
    assert (s.model, s.source, dict(s.params)) == ("m", "anchor", {"trial": 4})


@pytest.mark.parametrize(
    "q, k, n, message",
    [
        (Warp.identity(), 11, 10, r"budget 11 is out of range for 10 steps \(valid 2..10\)"),
        (Warp.identity(), 1, 10, r"budget 1 is out of range for 10 steps \(valid 2..10\)"),
        (Warp.identity(), 2, 1, r"steps must be at least 2"),
        (Warp.identity(), 2.5, 10, r"budget must be an integer; got 2.5"),
        (lambda u: 1 - u, 4, 10, r"the warp decreases somewhere"),
        (lambda u: u * np.nan, 4, 10, r"the warp returned a non-finite value"),
        (lambda u: 0.5, 4, 10, r"the warp returned shape \(\) for 4 inputs; it must be vectorized"),
    ],
)
def test_schedule_from_warp_errors(q, k, n, message):
    with pytest.raises(ScheduleError, match=message):
        schedule_from_warp(q, k, n)


# ----------------------------------------------------------------- mixing


def test_mix_warps_is_the_pointwise_average():
    a, b = warp(Schedule(10, [0, 1, 2, 9])), warp(Schedule(10, [0, 5, 9]))
    m = mix_warps(a, b, 0.25)
    u = np.linspace(0, 1, 97)
    np.testing.assert_allclose(m(u), 0.75 * a(u) + 0.25 * b(u), atol=1e-15)
    assert mix_warps(a, b, 0.0)(budget_positions(4)).tolist() == a(budget_positions(4)).tolist()
    assert mix_warps(a, b, 1.0)(budget_positions(3)).tolist() == b(budget_positions(3)).tolist()
    with pytest.raises(ScheduleError, match=r"mixing weight must be in \[0, 1\]; got 1.5"):
        mix_warps(a, b, 1.5)


# ----------------------------------------------------------------- resampling


def test_resample_the_published_reference_to_28_steps():
    """K' = round(26 * 28 / 50) = round(14.56) = 15; e.g. k = 7: u = 1/2, Q_ref(1/2) =
    (15 + 18) / 2 / 49 = 16.5/49, p = 16.5 * 27 / 49 = 9.09 -> step 9."""
    s = resample(FLUX_REF.with_metadata(model="flux1-dev", source="published", metrics={"lpips": 0.1}), 28)
    assert str(s) == "28:0,1,2,3,4,5,6,9,12,17,21,24,25,26,27"
    assert (s.model, s.source) == ("flux1-dev", "published")
    assert s.params["resampled_from"] == 50 and s.params["resampled_budget_from"] == 26
    assert dict(s.metrics) == {}  # measured at 50 steps; not valid at 28


def test_resample_to_the_same_steps_is_the_identity():
    assert resample(FLUX_REF, 50) is FLUX_REF


def test_resample_keeps_full_and_the_origin():
    assert resample(Schedule.full(50), 20).is_full
    twice = resample(resample(FLUX_REF, 28), 40)
    assert twice.params["resampled_from"] == 50  # the step count it was calibrated at


@settings(max_examples=150)
@given(schedules(), st.integers(2, 200))
def test_resample_keeps_speedup_within_rounding(s, n_new):
    r = resample(s, n_new)
    assert r.steps == n_new
    exact = s.budget * n_new / s.steps
    assert r.budget == resampled_budget(s.budget, s.steps, n_new)
    if 2 <= exact <= n_new:
        assert abs(r.budget - exact) <= 0.5  # K' is K N'/N rounded
    else:
        assert r.budget == min(max(round(exact), 2), n_new)  # clipped to [2, N']


def test_resampled_budget_rounds_ties_up_and_clips():
    assert resampled_budget(10, 50, 25) == 5
    assert resampled_budget(5, 50, 25) == 3  # 2.5 -> 3
    assert resampled_budget(2, 50, 10) == 2  # 0.4 -> clipped to 2
    assert resampled_budget(40, 40, 10) == 10


def test_resample_errors():
    with pytest.raises(ScheduleError, match=r"new step count must be at least 2"):
        resample(FLUX_REF, 1)
    with pytest.raises(ScheduleError, match=r"resample\(\) needs a Schedule; got tuple"):
        resample((0, 49), 28)  # type: ignore[arg-type]


def test_w1_steps_is_zero_for_one_schedule_and_symmetric():
    from comfyui_otcache.otcache_core.schedule import Schedule
    from comfyui_otcache.otcache_core.warp import w1_steps

    a, b = Schedule(28, (0, 1, 6, 13, 20, 27)), Schedule.uniform(28, 6)
    assert w1_steps(a, a) == 0.0
    assert w1_steps(a, b) == w1_steps(b, a) > 1.0
