"""Precision: which bf16 units a CPU reports, what train.precision resolves to on it and why (logged), and
autocast training close to fp32 with fp32 master weights."""

import math

import pytest
import torch

from qkv import hardware
from qkv.hardware import cpu_bf16_units
from qkv.training.precision import resolve_precision
from qkv.training.trainer import Trainer
from trainer_fixtures import FixedBatches, lm_loss, tiny_gpt, train_cfg

# ---------------------------------------------------------------------------------------------------------
# precision


def _cpuinfo(tmp_path, flags: str):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
    return str(p)


@pytest.mark.parametrize(("flags", "units"), [
    ("avx2 avx512f amx_bf16 amx_tile avx512_bf16", ["AMX-BF16", "AVX512-BF16"]),
    ("avx2 avx512f avx512_bf16", ["AVX512-BF16"]),  # AMD Zen 4/5
    ("avx2 fma", []),  # AVX2 only: bf16 is emulated
])
def test_cpu_bf16_units_read_the_cpu_flags(tmp_path, flags, units):
    assert cpu_bf16_units(_cpuinfo(tmp_path, flags)) == units


def test_cpu_bf16_units_without_cpuinfo_is_none(tmp_path):
    assert cpu_bf16_units(str(tmp_path / "missing")) == []


@pytest.mark.parametrize(("setting", "units", "dtype", "says"), [
    ("fp32", ["AMX-BF16"], None, "fp32"),
    ("auto", ["AMX-BF16", "AVX512-BF16"], torch.bfloat16, "this CPU has AMX-BF16, AVX512-BF16"),
    ("auto", ["AVX512-BF16"], torch.bfloat16, "this CPU has AVX512-BF16"),
    ("auto", [], None, "no bf16 units"),
    ("bf16", [], torch.bfloat16, "emulated"),
    ("bf16", ["AVX512-BF16"], torch.bfloat16, "this CPU has AVX512-BF16"),
    ("fp16", [], torch.float16, "emulated"),
])
def test_resolve_precision_on_cpu(monkeypatch, setting, units, dtype, says):
    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda: units)
    p = resolve_precision(setting, torch.device("cpu"))
    assert p.dtype is dtype and says in p.reason and p.name == {None: "fp32"}.get(dtype, p.name)


def test_auto_precision_is_logged_with_its_reason(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda: [])
    logs = []
    Trainer(tiny_gpt(), lm_loss, FixedBatches(8), train_cfg(precision="auto"), log=logs.append).fit()
    assert any(line.startswith("precision: fp32 (auto: this CPU has no bf16 units") for line in logs), logs


@pytest.mark.parametrize("setting", ["bf16", "fp16"])
def test_autocast_trains_close_to_fp32_and_keeps_fp32_master_weights(setting):
    """Approximate by design: autocast rounds matmul inputs to 8 (bf16) or 11 (fp16) significant bits."""
    def run(precision):
        model = tiny_gpt()
        result = Trainer(model, lm_loss, FixedBatches(8), train_cfg(max_steps=3, precision=precision)).fit()
        return result, model

    ref, _ = run("fp32")
    low, model = run(setting)
    assert all(math.isfinite(loss) for _, loss in low.losses)
    assert low.losses[0][1] == pytest.approx(ref.losses[0][1], abs=0.05)
    assert low.losses[0][1] != ref.losses[0][1]  # it really ran in the low precision
    assert all(p.dtype == torch.float32 for p in model.parameters())
