"""Hypothesis strategies shared by the schedule and warp tests."""
from __future__ import annotations

from hypothesis import strategies as st

from comfyui_otcache.otcache_core.schedule import Schedule


@st.composite
def schedules(draw, min_steps: int = 2, max_steps: int = 200) -> Schedule:
    """Any valid schedule: N in [min_steps, max_steps], inner steps from random bit masks.

    One big integer per mask is fast to draw; AND/OR of masks varies the density (about
    1/8 to 7/8 of the inner steps), and the extreme masks 0 and all-ones give K = 2 and K = N.
    """
    n = draw(st.integers(min_steps, max_steps))
    width = n - 2
    masks = draw(st.lists(st.integers(0, 2**width - 1), min_size=3, max_size=3))
    a, b, c = masks
    mask = draw(st.sampled_from([a, a & b, a & b & c, a | b, a | b | c]))
    inner = [i + 1 for i in range(width) if mask >> i & 1]
    return Schedule(n, [0, *inner, n - 1])
