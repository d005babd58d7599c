"""Shared test setup.

- Every test starts from the same RNG state and leaves torch's default dtype as it found it.
- Every test runs on one torch thread and gives back the count it found: GEMM blocking and reduction order
  depend on the thread count, so a threshold measured on one thread holds on a machine with any number of
  cores, and no test's thread setting leaks into the next.
- Every test computes in fp32 whatever the CPU has: ``train.precision = "auto"`` (the Multi30k preset's)
  resolves as on a CPU without bf16 units. bf16 matmuls round differently on AMX, AVX512-BF16 and
  emulation, so what a model learns in bf16 depends on the machine. Tests about precision patch
  `qkv.hardware.cpu_bf16_units` themselves.
- No test downloads: QKV_DATA_URL points at a closed loopback port unless a test serves its own mirror.
- `shared_data`: the corpora a few tests truly need (tinyshakespeare, multi30k), found as qkv finds them —
  $QKV_DATA_DIR, else the cache ($QKV_CACHE_DIR or ~/.cache/qkv/data) — never downloaded by a test: `make test`
  runs `qkv data get` first where there is no ../shared/data. Tests that need some text make their own
  (`helpers.english_text`).
- `tiny_runs`: one tiny trained run of each task (lm, chat, translate, digits), trained once per session for the
  server's tests (tests/serve_fixtures.py).
- `fwd_bwd_close`: tinygrad ``helper_test_op``-style check that two implementations agree on the
  forward pass and on the gradients of every input (and of any parameter pairs given).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

from helpers import CORPORA


@pytest.fixture(autouse=True)
def _seed_and_restore_dtype():
    dtype = torch.get_default_dtype()
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)


def _find_corpora(links: Path) -> tuple[Path | None, str]:
    """(a folder laid out like $QKV_DATA_DIR holding every corpus of CORPORA, or None; what is missing).
    When they sit in different places (one in $QKV_DATA_DIR, one in the cache) `links` gathers them."""
    from qkv.data.registry import resolve
    from qkv.errors import QKVError

    found, missing = {}, []
    for name in CORPORA:
        try:
            found[name] = resolve(name, download=False)
        except QKVError:
            missing.append(name)
    if missing:
        return None, ", ".join(missing)
    parents = {folder.parent for folder in found.values()}
    if len(parents) == 1 and all(folder.name == name for name, folder in found.items()):
        return parents.pop(), ""
    links.mkdir(parents=True, exist_ok=True)
    for name, folder in found.items():
        (links / name).symlink_to(folder, target_is_directory=True)
    return links, ""


@pytest.fixture(scope="session")
def available_data(tmp_path_factory) -> Path | None:
    """The corpora's folder (`shared_data`), or None when they are not on this machine."""
    return _find_corpora(tmp_path_factory.mktemp("corpora"))[0]


@pytest.fixture(scope="session")
def shared_data(available_data):
    """A folder laid out like $QKV_DATA_DIR with the corpora tests that truly need one read (tinyshakespeare,
    multi30k): $QKV_DATA_DIR's or the cache's copy; a clear failure when neither has them."""
    if available_data is None:
        _, missing = _find_corpora(Path("/nonexistent"))
        pytest.fail(f"this test needs {missing}, which is neither under $QKV_DATA_DIR nor in the cache: run "
                    f"`qkv data get {' '.join(CORPORA)}` (make test does) or set QKV_DATA_DIR")
    return available_data


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Tests never download: a dataset missing locally would be fetched from this closed loopback port (and fail,
    naming the file), not from the internet. Download tests point QKV_DATA_URL at their own loopback server."""
    monkeypatch.setenv("QKV_DATA_URL", "http://127.0.0.1:9/tests-never-download")


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict:
    """name -> run directory of the tiny runs in tests/serve_fixtures.py (about 5 s to train, once)."""
    from serve_fixtures import make_runs

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_runs(tmp_path_factory.mktemp("tiny-runs"))
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def more_runs(tmp_path_factory) -> dict:
    """The tiny runs of the other run kinds (caption, shapes: text-to-image, autoencoder, speech, qa, summarize, code
    with either architecture), trained once per session when a test asks for them (tests/serve_fixtures.py)."""
    from serve_fixtures import make_runs

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_runs(tmp_path_factory.mktemp("more-runs"),
                         ("caption", "shapes", "autoencoder", "speech", "qa", "summarize", "code", "code-gpt"))
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ctc_speech_run(more_runs, tmp_path_factory):
    """A transcriber with a CTC head (no decoder) trained 4 steps on the speech run's folder (30 FSDD clips), once
    per session: a transcript to show and no cross-attention, not a good model."""
    from helpers import preset
    from serve_fixtures import _train
    from speech_fixtures import SPEECH_ARGS

    data = more_runs["speech"].parent / "speech-data"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(["--config", preset("fsdd-digits"), "--data.source", str(data), *SPEECH_ARGS, "--model.head",
                       "ctc", "--model.n_decoder_layers", "0", "--train.max_steps", "4", "--train.decay_steps", "4",
                       "--train.warmup_steps", "1", "--train.eval_interval", "4", "--train.full_eval_interval", "4"],
                      tmp_path_factory.mktemp("ctc") / "ctc")
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def data_dir(shared_data, monkeypatch, tmp_path):
    """The corpora's folder, offline: QKV_DATA_DIR points at it and the download cache is an empty tmp folder
    (nothing may be downloaded or cached)."""
    monkeypatch.setenv("QKV_DATA_DIR", str(shared_data))
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    return shared_data


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _fp32_everywhere(monkeypatch):
    from qkv import hardware

    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda cpuinfo="/proc/cpuinfo": [])


def _outputs(out) -> list[Tensor]:
    """A tensor, or the tensors of a tuple/list (None entries dropped), as a list."""
    if isinstance(out, Tensor):
        return [out]
    return [o for o in out if o is not None]


def _assert_fwd_bwd_close(
    ours: Callable[..., object],
    ref: Callable[..., object],
    inputs: Sequence[Tensor],
    param_grads: Callable[[], list[tuple[Tensor | None, Tensor | None]]] = lambda: [],
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    """Run `ours` and `ref` on separate copies of `inputs`; compare outputs, input grads, param grads.

    Float inputs get requires_grad; the same random upstream gradient is back-propagated through the
    outputs of both. `param_grads` is called after backward and returns (ours.grad, ref.grad) pairs
    (slices allowed, e.g. a third of torch's packed in_proj_weight.grad).
    """
    xs_a = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    xs_b = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    outs_a, outs_b = _outputs(ours(*xs_a)), _outputs(ref(*xs_b))
    assert len(outs_a) == len(outs_b), f"{len(outs_a)} outputs vs {len(outs_b)}"
    for a, b in zip(outs_a, outs_b, strict=True):
        assert a.shape == b.shape, f"forward shape {tuple(a.shape)} vs {tuple(b.shape)}"
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"forward: {m}")

    upstream = [torch.randn_like(a) for a in outs_a]
    sum((a * g).sum() for a, g in zip(outs_a, upstream, strict=True)).backward()
    sum((b * g).sum() for b, g in zip(outs_b, upstream, strict=True)).backward()

    for i, (a, b) in enumerate(zip(xs_a, xs_b, strict=True)):
        if not a.is_floating_point():
            continue
        assert a.grad is not None and b.grad is not None, f"input {i} got no gradient"
        torch.testing.assert_close(
            a.grad, b.grad, atol=atol, rtol=rtol, msg=lambda m, i=i: f"grad of input {i}: {m}"
        )
    for j, (ga, gb) in enumerate(param_grads()):
        assert ga is not None and gb is not None, f"parameter pair {j} got no gradient"
        assert ga.abs().sum() > 0, f"parameter pair {j} has an all-zero gradient: the check would be vacuous"
        torch.testing.assert_close(
            ga, gb, atol=atol, rtol=rtol, msg=lambda m, j=j: f"grad of parameter pair {j}: {m}"
        )


@pytest.fixture
def fwd_bwd_close():
    """The `_assert_fwd_bwd_close` checker (a fixture so test files need no import path tricks)."""
    return _assert_fwd_bwd_close
