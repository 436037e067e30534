"""The automatic prompt check (demo/prompt_check.py) against the renderer's own images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_otcache.demo import prompt_check as pc
from comfyui_otcache.demo import tiny_data as data


def renders(count: int):
    prompts = data.held_out_prompts(count)
    rng = np.random.default_rng([5, 99])
    return prompts, torch.from_numpy(np.stack([data.render(p, rng) for p in prompts])).float()


@pytest.mark.slow  # renders and checks 24 images
def test_true_renders_pass_and_other_renders_mostly_do_not():
    prompts, images = renders(12)
    classifier = pc.load_background_classifier()
    own = np.mean(pc.check_images(classifier, prompts, images))
    other = np.mean(pc.check_images(classifier, prompts, images.roll(1, dims=0)))
    assert own >= 0.8 and other <= 0.2, (own, other)  # 10 of 12 pass (100% of 256 held-out renders do)


@pytest.mark.slow  # checks 16 frames
def test_a_clip_passes_only_when_every_frame_shows_the_prompt():
    prompts = [data.Prompt("checker", (("red", "triangle"), ("blue", "bar"))),
               data.Prompt("stripes", (("green", "diamond"),))]
    rng = np.random.default_rng(3)
    clips = torch.from_numpy(np.stack([data.render_clip(p, rng, data_set="v8") for p in prompts])).float()
    classifier = pc.load_background_classifier()
    assert clips.shape[1] == data.CLIP_FRAMES == 2  # the shipped HunyuanVideo's clip: 2 frames of 48x48
    assert pc.check_clips(classifier, prompts, clips) == ([True, True], [1.0, 1.0])
    lost = clips.clone()
    lost[1, 1] = lost[0, 1]  # the second clip's second frame shows the first prompt's picture
    assert pc.check_clips(classifier, prompts, lost) == ([True, False], [1.0, 0.5])


def test_clip_frames_of_48_pixels_are_read_as_the_32_and_64_pixel_ones():
    """True renders pass at every frame size a video family draws; a wrong prompt still fails."""
    classifier = pc.load_background_classifier()
    prompts = data.held_out_prompts(6)
    rng = np.random.default_rng(5)
    clips = torch.from_numpy(np.stack([data.render_clip(p, rng, frames=2, size=48) for p in prompts])).float()
    assert pc._as_64(clips[:, 0]).shape == (6, 64, 64, 3)
    assert pc.check_clips(classifier, prompts, clips, pc.check_sizes("v8"))[0] == [True] * 6
    assert not all(pc.check_images(classifier, prompts[1:] + prompts[:1], clips[:, 0], pc.check_sizes("v8")))


@pytest.mark.parametrize("shape", data.SHAPES)
def test_every_shape_is_told_apart_from_the_others(shape):
    found = []
    for size, angle in zip(data.OBJECT_SIZES, data.SHAPE_ANGLES[shape] * 2):  # the smallest and largest size
        image = np.full((64, 64, 3), 0.5)
        image[data._shape_mask(shape, 30.3, 33.6, size, angle)] = data.COLOURS["red"]
        found.append([other for other in data.SHAPES if pc.named_object_present(image, "red", other, pc.check_sizes("v3"))])
    assert found == [[shape], [shape]]


@pytest.mark.parametrize("shape", data.SHAPES)
def test_refusing_crosses_refuses_a_plus_as_a_bar_and_keeps_every_shape(shape):
    plus = np.full((64, 64, 3), 0.5)
    for angle in (0.0, np.pi / 2):
        plus[data._shape_mask("bar", 30.3, 33.6, 10.0, angle)] = data.COLOURS["red"]
    assert pc.named_object_present(plus, "red", "bar")  # a bar fits a plus better than the other four shapes
    assert not pc.named_object_present(plus, "red", "bar", refuse_crosses=True)
    assert not pc.named_object_present(plus, "red", "any", refuse_crosses=True)
    image = np.full((64, 64, 3), 0.5)
    image[data._shape_mask(shape, 30.3, 33.6, 10.0, data.SHAPE_ANGLES[shape][-1])] = data.COLOURS["red"]
    assert [t for t in data.SHAPES if pc.named_object_present(image, "red", t, refuse_crosses=True)] == [shape]


def test_objects_are_found_by_colour_and_a_field_is_not_an_object():
    image = np.full((64, 64, 3), 0.5)
    image[data._shape_mask("diamond", 32, 32, 10, 0.0)] = data.COLOURS["red"]
    assert pc.named_object_present(image, "red", "diamond") and pc.named_object_present(image, "any", "diamond")
    assert pc.named_object_present(image, "red", "any") and not pc.named_object_present(image, "red", "square")
    assert not pc.named_object_present(image, "blue", "any") and not pc.named_object_present(image, "blue", "diamond")
    field = np.tile(np.asarray(data.COLOURS["red"]), (64, 64, 1))  # a field of the colour is not an object
    assert not pc.named_object_present(field, "red", "any")


def test_components_tell_a_blob_of_the_right_colour_from_the_named_shape():
    """A red blob where a red square is asked: colour present, an object of some shape, not the square."""
    prompt = data.Prompt("any", (("red", "square"),))
    image = np.full((64, 64, 3), 0.5, dtype=np.float32)
    image[data._shape_mask("circle", 32, 32, 11, 0.0)] = data.COLOURS["red"]
    classifier = pc.load_background_classifier()
    parts = pc.check_components(classifier, [prompt], torch.from_numpy(image)[None])
    assert parts["colour"] == 1.0 and parts["object_any_shape"] == 1.0 and parts["object"] == 0.0
    assert np.isnan(parts["background"])  # the prompt names no background kind
    parts = pc.check_components(classifier, [data.Prompt("any", (("blue", "square"),))], torch.from_numpy(image)[None])
    assert parts == {"background": parts["background"], "colour": 0.0, "object_any_shape": 0.0, "object": 0.0}


def test_shape_confusion_says_what_is_drawn_for_each_named_shape():
    """A red circle where a red triangle is asked, and nothing blue where a blue bar is: counted per named shape."""
    prompt = data.Prompt("any", (("red", "triangle"), ("blue", "bar"), ("green", "any")))
    image = np.full((64, 64, 3), 0.5, dtype=np.float32)
    image[data._shape_mask("circle", 20, 20, 10, 0.0)] = data.COLOURS["red"]
    table = pc.shape_confusion([prompt], torch.from_numpy(image)[None])
    assert table["triangle"] == {"circle": 1} and table["bar"] == {"none": 1}
    assert all(not counts for shape, counts in table.items() if shape not in ("triangle", "bar"))


def test_the_check_tries_the_sizes_of_the_models_data_set():
    assert pc.check_sizes("v3") == tuple(np.arange(8.0, 11.01, 0.5))
    assert pc.SIZES == pc.check_sizes(data.DATA_SET) == (11.0,)  # the shipped models' data set draws one size
    assert pc.check_sizes("v5") == (11.0,)
    image = np.full((64, 64, 3), 0.5)
    image[data._shape_mask("triangle", 30.3, 33.6, 11.0, 0.0)] = data.COLOURS["red"]
    assert pc.named_object_present(image, "red", "triangle", pc.check_sizes("v5"))
    small = np.full((64, 64, 3), 0.5)
    small[data._shape_mask("triangle", 30.3, 33.6, 8.0, 0.0)] = data.COLOURS["red"]
    near = pc.colour_mask(small, "red")
    v3, v5 = (float(pc.fit_map(near, "triangle", pc.check_sizes(d)).max()) for d in ("v3", "v5"))
    assert v3 > 0.95 and v5 < 0.6  # v3 draws size 8 and its check fits it exactly; v5's only tries size 11
    with pytest.raises(ValueError, match="unknown data set"):
        pc.check_sizes("v9")
