"""The automatic prompt check (demo/prompt_check.py) against the renderer's own images."""
from __future__ import annotations

import numpy as np
import torch

from comfyui_otcache.demo import prompt_check as pc
from comfyui_otcache.demo import tiny_data as data


def renders(count: int):
    prompts = data.held_out_prompts(count)
    rng = np.random.default_rng([5, 99])
    return prompts, torch.from_numpy(np.stack([data.render(p, rng) for p in prompts])).float()


def test_true_renders_pass_and_other_renders_mostly_do_not():
    prompts, images = renders(24)
    classifier = pc.load_background_classifier()
    own = np.mean(pc.check_images(classifier, prompts, images))
    other = np.mean(pc.check_images(classifier, prompts, images.roll(1, dims=0)))
    assert own >= 0.75 and other <= 0.5 and own - other >= 0.35, (own, other)


def test_objects_are_found_by_colour_and_a_diamond_is_a_square():
    # Known limit: the placement test does not tell shapes apart (a circle template lies 70% inside
    # this square too), so the check verifies colour, size and region, not the shape.
    image = np.full((64, 64, 3), 0.5)
    image[data._shape_mask("square", 32, 32, 9, np.pi / 4)] = data.COLOURS["red"]  # a square at 45 degrees, the smallest size
    assert pc.named_object_present(image, "red", "diamond") and pc.named_object_present(image, "red", "square")
    assert pc.named_object_present(image, "any", "square") and pc.named_object_present(image, "red", "any")
    assert not pc.named_object_present(image, "blue", "any") and not pc.named_object_present(image, "blue", "square")
    field = np.tile(np.asarray(data.COLOURS["red"]), (64, 64, 1))  # a field of the colour is not an object
    assert not pc.named_object_present(field, "red", "any")
