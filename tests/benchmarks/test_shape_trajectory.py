from __future__ import annotations

from benchmarks.tiny.common import data  # noqa: F401  (ComfyUI import)

import numpy as np
from scipy import ndimage

from benchmarks.tiny.shape_trajectory import closest, true_means


def test_an_estimate_is_matched_to_its_own_shape_even_when_blurred():
    prompts = [data.Prompt("solid", (("red", shape),)) for shape in data.SHAPES]
    means = true_means(prompts, "v3", draws=32)
    assert closest(means, means) == list(data.SHAPES)
    blurred = np.stack([ndimage.gaussian_filter(m, sigma=(2.5, 2.5, 0)) for m in means])
    assert closest(blurred, means) == list(data.SHAPES)
    assert closest(blurred[[1, 0, 2, 3, 4]], means)[:2] == ["square", "circle"]
