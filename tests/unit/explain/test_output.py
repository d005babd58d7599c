"""`qkv explain output`: h Wᵀ is the model's logits, the written-out softmax the sampler's distribution, and each
sampling setting reshapes it as `qkv.generation.sampling` does."""

import json

import pytest
import torch

from qkv.cli.main import main
from qkv.data.translation import source_ids
from qkv.errors import QKVError
from qkv.explain import explain

TEXT = {"lm": "<img src=x onerror=ale", "chat": "What is 2?", "translate": "drei eins"}


def model_logits(run, text: str) -> torch.Tensor:
    """The model's own logits for the next token (the first target token for a translation run), (V,)."""
    with torch.no_grad():
        if run.task == "translate":
            (ids,), _ = source_ids(run.src_tokenizer, [text], run.model.config.max_seq_len)
            src = torch.tensor([ids])
            mask = torch.ones_like(src, dtype=torch.bool)
            bos = torch.tensor([[run.tgt_tokenizer.bos_id]])
            return run.model.decode(run.model.encode(src, mask), mask, bos)[0, -1]
        return run.model(torch.tensor([run.tokenizer.encode(text)]))[0][0, -1]


@pytest.mark.parametrize("name", ["lm", "chat", "translate"])
def test_logits_and_probabilities_are_the_models(runs, name):
    run = runs[name]
    e = explain("output", run, text=TEXT[name], src=TEXT[name])
    assert [c.ok for c in e.checks] == [True, True]
    logits = model_logits(run, TEXT[name])
    probs = logits.softmax(-1)
    top = probs.topk(10)
    assert e.data["top_ids"] == top.indices.tolist()
    assert e.data["top_probs"] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert e.data["top_logits"] == pytest.approx(logits[top.indices].tolist(), abs=1e-5)

    s = e.data["settings"]
    V = logits.numel()
    assert s["T = 1"]["nonzero"] == V and s["top-k 5"]["nonzero"] == 5 and s["greedy (T = 0)"]["nonzero"] == 1
    kept = int((probs.sort(descending=True).values.cumsum(0) < 0.9).sum()) + 1  # smallest set with mass ≥ 0.9
    assert s["top-p 0.9"]["nonzero"] == kept
    assert s["T = 0.5"]["entropy"] < s["T = 1"]["entropy"] < s["T = 2"]["entropy"]
    assert s["greedy (T = 0)"]["entropy"] == 0 and s["greedy (T = 0)"]["top1"] == 1
    assert s["T = 1"]["entropy"] == pytest.approx(-(probs * probs.log()).sum().item(), abs=1e-4)
    assert e.data["setting_probs"]["top-k 5"][:5] == pytest.approx((top.values[:5] / top.values[:5].sum()).tolist(),
                                                                    abs=1e-5)


def test_the_logit_check_compares_with_the_models_output(runs, monkeypatch):
    head = runs["lm"].model.lm_head
    monkeypatch.setattr(head, "forward", lambda h: h @ head.weight.T + 1e-3)
    logits_check, softmax_check = explain("output", runs["lm"], text="<img").checks
    assert not logits_check.ok and logits_check.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert softmax_check.ok  # a constant shift of every logit leaves the softmax as it was


def test_a_diffusion_run_is_a_one_line_error(runs):
    with pytest.raises(QKVError) as err:
        explain("output", runs["digits"])
    assert "needs" in str(err.value) and "\n" not in str(err.value)


def test_json_and_text_agree_and_the_bars_are_drawn(tiny_runs, tmp_path, capsys):
    args = ["explain", "output", str(tiny_runs["lm"]), "--text", TEXT["lm"]]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    table = text[text.index("what each setting leaves to chance"):].splitlines()[2:8]
    for line, (name, s) in zip(table, data["data"]["settings"].items(), strict=True):
        assert line.strip().startswith(name)
        entropy, nonzero = line.strip().removeprefix(name).split()[:2]
        assert float(entropy) == pytest.approx(s["entropy"], abs=1e-3) and int(nonzero) == s["nonzero"]
    png = tmp_path / "output-sampling.png"
    assert data["pngs"] == [str(png)] and png.stat().st_size > 1000
    assert data["figures"][0]["data"]["probs"] == data["data"]["setting_probs"]
