"""Caption data: a folder of images with captions.jsonl (several references each), its bad inputs as one-line
errors naming the file and line, clip strips, and the batch source (seeded, exact resume, DDP rows)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from qkv.data.captioning import (
    CaptionBatches,
    CaptionDataConfig,
    encode_captions,
    load_caption_folder,
    read_clip,
    read_image,
    split_folder,
    write_image,
)
from qkv.data.scenes import SceneSpec, parse_caption
from qkv.errors import QKVError
from qkv.tasks.caption import caption_tokenizer, grammar_phrases


def _png(path, size=(20, 12), colour=(255, 0, 0)):
    Image.new("RGB", size, colour).save(path)


def _folder(tmp_path, rows):
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / name)
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in rows)
                                             + "\n", encoding="utf-8")
    return tmp_path


def test_a_folder_loads_with_several_references_resized(tmp_path):
    root = _folder(tmp_path, [{"image": "a.png", "captions": ["a red thing", "something  red"]},
                              {"image": "b.png", "captions": "one caption"}, {"image": "c.png", "captions": ["x"]}])
    data = load_caption_folder(root, 16)
    assert data.images.shape == (3, 3, 16, 16)
    assert data.refs[0] == ["a red thing", "something red"] and data.refs[1] == ["one caption"]
    assert data.images[0, 0].mean() > 0.9 and data.images[0, 1].mean() < -0.9  # red, in [-1, 1]
    train, val = split_folder(data, 0.34, 0)
    assert len(train) == 2 and len(val) == 1


@pytest.mark.parametrize("rows, msg", [
    ([{"image": "missing.png", "captions": ["x"]}], r"captions.jsonl:1: the image missing.png does not exist"),
    ([{"image": "a.png", "captions": ["fine"]}, {"image": "b.png", "captions": ["  "]}],
     r"captions.jsonl:2: an empty caption for b.png"),
    ([{"image": "a.png", "captions": []}], "non-empty list of strings"),
    (["{not json"], r"captions.jsonl:1: not JSON"),
    ([{"file": "a.png"}], "expected"),
    ([{"image": "notes.txt", "captions": ["x"]}], "not a readable image"),
    ([], "no images listed"),
])
def test_bad_folders_are_one_line_errors(tmp_path, rows, msg):
    root = _folder(tmp_path, rows)
    (root / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(QKVError, match=msg) as e:
        load_caption_folder(root, 16)
    assert "\n" not in str(e.value)


def test_missing_index_binary_index_and_missing_folder(tmp_path):
    with pytest.raises(QKVError, match="no captions.jsonl"):
        load_caption_folder(tmp_path, 16)
    (tmp_path / "captions.jsonl").write_bytes(b"\x00\x01")
    with pytest.raises(QKVError, match="binary"):
        load_caption_folder(tmp_path, 16)
    (tmp_path / "captions.jsonl").write_bytes(b'{"image": "\xff"}')
    with pytest.raises(QKVError, match="not UTF-8"):
        load_caption_folder(tmp_path, 16)
    with pytest.raises(QKVError, match="neither"):
        load_caption_folder(tmp_path / "nope", 16)


def test_read_image_resizes_and_refuses_non_images(tmp_path):
    _png(tmp_path / "a.png", (30, 10))
    x, size = read_image(tmp_path / "a.png", 8)
    assert x.shape == (3, 8, 8) and size == (30, 10)
    (tmp_path / "b.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(QKVError, match="b.png: not a readable image"):
        read_image(tmp_path / "b.png", 8)
    with pytest.raises(QKVError, match="no such image file"):
        read_image(tmp_path / "c.png", 8)


def test_a_clip_strip_round_trips_and_a_wrong_strip_is_refused(tmp_path):
    clip = torch.rand(3, 3, 8, 8) * 2 - 1
    write_image(clip, tmp_path / "clip.png")
    back, (w, h) = read_clip(tmp_path / "clip.png", 3, 8)
    assert (w, h) == (24, 8) and back.shape == (3, 3, 8, 8)
    assert (back - clip).abs().max() < 2 / 255 + 1e-6  # 8-bit rounding
    with pytest.raises(QKVError, match="strip of 4 square frames"):
        read_clip(tmp_path / "clip.png", 4, 8)


def test_encode_captions_teacher_forcing_layout_and_length_limit():
    tok = caption_tokenizer(grammar_phrases(), "bpe", 400)
    tgt_in, tgt_out = encode_captions(tok, ["a small red circle at the top", "a large blue square in the centre"], 20,
                                      tok.pad_id, tok.bos_id, tok.eos_id)
    n = len(tok.encode("a small red circle at the top"))
    assert n == 7  # the grammar's BPE holds whole words
    assert tgt_in[0, 0] == tok.bos_id and tgt_out[0, n] == tok.eos_id and (tgt_out[0, n + 1 :] == -100).all()
    assert torch.equal(tgt_in[0, 1 : n + 1], tgt_out[0, :n])
    with pytest.raises(QKVError, match="tokens with its EOS; the model takes at most 5"):
        encode_captions(tok, ["a small red circle at the top"], 5, tok.pad_id, tok.bos_id, tok.eos_id)


def test_procedural_batches_are_seeded_resumable_and_split_across_processes():
    tok = caption_tokenizer(grammar_phrases(), "bpe", 400)
    spec = SceneSpec(image_size=32)
    one = CaptionBatches(tok, 64, 8, seed=5, spec=spec)
    first = one.next_batch()
    state = one.state_dict()
    second = one.next_batch()
    assert first["images"].shape == (8, 3, 32, 32)
    caps = [tok.decode([i for i in row.tolist() if i >= 0 and i != tok.eos_id]) for row in first["tgt_out"]]
    assert all(parse_caption(c) for c in caps)
    one.load_state_dict(state)
    assert torch.equal(one.next_batch()["images"], second["images"])
    ranks = [CaptionBatches(tok, 64, 8, seed=5, rank=r, world_size=2, spec=spec).next_batch() for r in (0, 1)]
    assert torch.equal(torch.cat([b["images"] for b in ranks]), first["images"])


def test_folder_batches_draw_each_reference(tmp_path):
    root = _folder(tmp_path, [{"image": "a.png", "captions": ["a red thing", "red again"]}])
    data = load_caption_folder(root, 8)
    tok = caption_tokenizer(["a red thing", "red again"], "char", 0)
    batch = CaptionBatches(tok, 32, 16, seed=0, data=data).next_batch()
    texts = {tok.decode([i for i in row.tolist() if i >= 0 and i != tok.eos_id]) for row in batch["tgt_out"]}
    assert texts == {"a red thing", "red again"}


def test_config_validates_its_scene_settings():
    with pytest.raises(ValueError, match="overlap"):
        CaptionDataConfig(counts=[1, 2], holdout_counts=[2])
    assert CaptionDataConfig(source="clips").scene_spec().frames == 4
    assert np.isclose(CaptionDataConfig().val_fraction, 0.1)
