"""Explain mode's tests read the session's tiny runs (tests/serve_fixtures.py: lm, chat, translate, digits; and
`more_runs`: caption, shapes, autoencoder, speech), loaded once per module, plus a CTC speech run trained here."""

import pytest
import torch

from qkv.tasks import load_run


@pytest.fixture(scope="module")
def runs(tiny_runs) -> dict:
    """name -> loaded run (`qkv.load_run`) of every tiny run."""
    return {name: load_run(path) for name, path in tiny_runs.items()}


@pytest.fixture(scope="session")
def ctc_run_dir(tmp_path_factory):
    """A CTC transcriber (no decoder) on the speech run's FSDD digits: 40 steps (~2 s on one thread), weights to
    read, not a good model (tests/speech_fixtures.py)."""
    from helpers import preset
    from qkv.cli.main import main
    from speech_fixtures import SPEECH_ARGS, digit_clips, digit_folder

    root = tmp_path_factory.mktemp("explain-ctc")
    data = digit_folder(root / "data", digit_clips())
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", preset("fsdd-digits"), "--data.source", str(data), "--out", str(root / "ctc"),
                     *SPEECH_ARGS, "--model.head", "ctc", "--model.n_decoder_layers", "0", "--train.max_steps", "40",
                     "--train.decay_steps", "40", "--train.eval_interval", "40", "--train.full_eval_interval",
                     "40"]) == 0
    finally:
        torch.set_num_threads(n)
    return root / "ctc"
