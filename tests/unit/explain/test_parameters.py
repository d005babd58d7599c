"""`qkv explain parameters`: the run's table sums exactly to its model, GPT-3 175B's is `qkv params --preset`'s,
and the "500,000 words × 1024" claim is set against GPT-3's real 50,257 × 12,288 token table."""

import json

import pytest

from qkv.cli.main import main
from qkv.evaluation.params import param_report
from qkv.explain import explain
from qkv.models.autoencoder import Autoencoder, AutoencoderConfig
from qkv.models.io import save_run
from qkv.models.presets import get_preset
from qkv.tasks import load_run


@pytest.fixture(scope="module")
def every_kind(runs, tmp_path_factory) -> dict:
    """The tiny runs and an (untrained) autoencoder run: one run of every task."""
    model = Autoencoder(AutoencoderConfig(image_size=8, in_channels=1, width=8, downsample=1))
    ae = save_run(tmp_path_factory.mktemp("autoencoder"), model, extra_config={"task": "autoencoder"})
    return {**runs, "autoencoder": load_run(ae)}


@pytest.mark.parametrize("name", ["lm", "chat", "translate", "digits", "autoencoder"])
def test_the_runs_table_sums_exactly_to_its_model(every_kind, name):
    run = every_kind[name]
    e = explain("parameters", run)
    n = sum(p.numel() for p in run.model.parameters())
    assert e.data["run_total"] == n and sum(e.data["run_components"].values()) == n
    assert [(c.ok, c.tolerance) for c in e.checks] == [(True, 0.0), (True, 0.0)]
    assert f"{n:,}" in e.format_text()


def test_gpt3_and_the_embedding_claim(runs):
    e = explain("parameters", runs["lm"])
    report = param_report(get_preset("gpt3-175b"))  # what `qkv params --preset gpt3-175b` prints
    d = e.data
    assert d["gpt3_total"] == report.total and d["gpt3_components"] == {r.name: r.count for r in report.rows}
    assert d["gpt3_embedding"] == 50_257 * 12_288 == 617_558_016 == d["gpt3_components"]["token embedding (tok_emb)"]
    assert d["claim"] == 500_000 * 1024 == 512_000_000
    assert d["real_share"] == 617_558_016 / report.total and 0.0035 < d["real_share"] < 0.0036
    assert d["claim_share"] == 512_000_000 / report.total
    text = e.format_text()
    assert f"{d['claim_share']:.3%}" in text and f"{d['real_share']:.3%}" in text and "0.354%" in text


def test_the_check_fails_when_the_table_misses_a_module(runs, monkeypatch):
    import copy

    run = copy.copy(runs["translate"])
    table = run.parameter_table()
    table.rows = table.rows[:-2]
    run.parameter_table = lambda: table
    run_check, gpt3_check = explain("parameters", run).checks
    assert not run_check.ok and run_check.max_abs_diff == runs["translate"].model.dec_norm.weight.numel() * 2
    assert gpt3_check.ok


def test_json_and_text_agree_and_the_shares_are_drawn(tiny_runs, tmp_path, capsys):
    args = ["explain", "parameters", str(tiny_runs["digits"])]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    words = " ".join(text.split())
    tables = [b for b in data["blocks"] if b["kind"] == "table"]
    assert len(tables) == 3  # the run's, GPT-3's, the claim's
    for row in (row for table in tables for row in table["rows"]):  # every row's first cells, as the text has them
        assert " ".join(f"{c:,}" if isinstance(c, int) else str(c) for c in row[:4] if c != "") in words
    shares = data["figures"][0]["data"]["shares"]
    assert list(shares) == ["digits", "gpt3-175b"] and sum(shares["digits"].values()) == pytest.approx(1.0, abs=1e-4)
    png = tmp_path / "parameters-shares.png"
    assert data["pngs"] == [str(png)] and png.stat().st_size > 1000
