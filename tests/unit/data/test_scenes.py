"""The scene grammar and renderer: captions parse back into their objects, held-out compositions stay held out,
the same seed draws the same scenes, and bad specs are refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.data.scenes import (
    COLOURS,
    DIRECTIONS,
    PLACES,
    SHAPES,
    SIZES,
    SceneObject,
    SceneSpec,
    describe,
    draw_scenes,
    evaluation_groups,
    parse_caption,
)

objects = st.builds(SceneObject, st.sampled_from(SHAPES), st.sampled_from(list(COLOURS)), st.sampled_from(list(SIZES)),
                    st.sampled_from(PLACES))


@settings(max_examples=200, deadline=None)
@given(st.lists(objects, min_size=1, max_size=9, unique_by=lambda o: o.place))
def test_parse_reads_back_every_scene_caption(objs):
    caption = describe(objs)
    assert parse_caption(caption) == sorted(objs, key=lambda o: PLACES.index(o.place))
    assert parse_caption(caption.upper() + "  ") == parse_caption(caption)  # case and spaces do not matter


@given(st.sampled_from(SHAPES), st.sampled_from(list(COLOURS)), st.sampled_from(list(SIZES)),
       st.sampled_from(DIRECTIONS))
def test_parse_reads_back_clip_captions(shape, colour, size, direction):
    o = SceneObject(shape, colour, size, direction)
    assert describe([o]) == f"a {size} {colour} {shape} moves {direction}"
    assert parse_caption(describe([o])) == [o]


def test_caption_examples():
    a = SceneObject("circle", "red", "small", "at the top left")
    b = SceneObject("square", "blue", "large", "on the right")
    c = SceneObject("triangle", "yellow", "large", "at the top")
    assert describe([b, a]) == "a small red circle at the top left and a large blue square on the right"
    assert describe([b, c, a]) == ("a small red circle at the top left, a large yellow triangle at the top and "
                                   "a large blue square on the right")


@pytest.mark.parametrize("text", ["", "a dog on a skateboard", "a small red circle", "a small red circle at the top "
                                  "left and", "a huge red circle at the top left", "a small red circle moves up",
                                  "a small red circle moves at the top left"])
def test_parse_refuses_what_the_grammar_cannot_say(text):
    assert parse_caption(text) is None


def test_held_out_pairs_never_appear_in_seen_scenes_and_always_in_held_out_ones():
    spec = SceneSpec(counts=[1, 2, 3])
    held = set(spec.holdout_pairs)
    _, _, seen = draw_scenes(spec, 400, 0)
    assert not {o.pair for objs in seen for o in objs} & held
    assert {len(objs) for objs in seen} == {1, 2, 3}
    _, _, out = draw_scenes(spec, 100, 1, pairs="held-out")
    assert all({o.pair for o in objs} & held for objs in out)
    for objs in seen + out:  # at most one object per cell
        assert len({o.place for o in objs}) == len(objs)


def test_same_seed_same_scenes_and_images_in_range():
    spec = SceneSpec()
    a, ca, _ = draw_scenes(spec, 20, [3, 1])
    b, cb, _ = draw_scenes(spec, 20, [3, 1])
    c, cc, _ = draw_scenes(spec, 20, [3, 2])
    assert np.array_equal(a, b) and ca == cb
    assert ca != cc
    assert a.shape == (20, 3, 64, 64) and a.dtype == np.float32 and a.min() >= -1 and a.max() <= 1


def test_a_clip_moves_its_object_in_the_named_direction():
    spec = SceneSpec(image_size=32, counts=[1], holdout_counts=[], frames=4)
    images, captions, objs = draw_scenes(spec, 12, 0)
    assert images.shape == (12, 4, 3, 32, 32)
    for x, (o,) in zip(images, objs, strict=True):
        ink = (x + 1).sum(axis=1)  # (F, H, W) brightness
        ys, xs = np.indices(ink.shape[1:])
        cx = [(ink[k] * xs).sum() / ink[k].sum() for k in range(4)]
        cy = [(ink[k] * ys).sum() / ink[k].sum() for k in range(4)]
        along = {"from left to right": np.diff(cx), "from right to left": -np.diff(cx),
                 "from top to bottom": np.diff(cy), "from bottom to top": -np.diff(cy)}[o.place]
        assert (along > 2).all(), (o, cx, cy)


def test_evaluation_groups_name_seen_and_held_out_sets():
    names = [g[0] for g in evaluation_groups(SceneSpec(), 10)]
    assert names[:3] == ["seen, 1 object", "seen, 2 objects", "seen, 3 objects"]
    assert names[3].startswith("held-out colour–shape pairs") and names[4] == "held-out count: 4 objects"


@pytest.mark.parametrize("kw, msg", [
    ({"counts": [1, 10]}, "1 to 9 objects"),
    ({"counts": []}, "at least one"),
    ({"counts": [1, 4]}, "overlap"),
    ({"holdout_pairs": ["purple circle"]}, "unknown colour–shape pair"),
    ({"frames": 4}, "one moving object"),
    ({"image_size": 8}, "image_size"),
])
def test_bad_specs_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SceneSpec(**kw)
