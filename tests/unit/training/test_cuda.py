"""What only a GPU can check (marked ``cuda``; skipped on a machine without one; `bench/gpu_check.sh` runs them):
attention on the GPU against the step-by-step reference, cached against uncached decoding, and a sharded
training step against an unsharded one, with the peak memory the trainer logs there (`max_memory_allocated`)."""

import pytest
import torch
import torch.nn.functional as F

from qkv import hardware
from qkv.generation.lm import generate_ids
from qkv.generation.sampling import TokenSampling
from qkv.nn.attention import attention_reference
from trainer_fixtures import FixedBatches, lm_loss, tiny_gpt, train_cfg

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_sdpa_on_the_gpu_matches_the_reference():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 32, device="cuda") for _ in range(3))
    mask = torch.ones(16, 16, dtype=torch.bool, device="cuda").tril()
    ref, _ = attention_reference(q, k, v, mask)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), ref, atol=2e-3, rtol=2e-3)


def test_cached_decoding_on_the_gpu_matches_uncached():
    model = tiny_gpt().cuda().eval()
    prompt = [1, 2, 3]
    s = TokenSampling(temperature=0.0)
    assert list(generate_ids(model, prompt, 5, s)) == list(generate_ids(model, prompt, 5, s, use_cache=False))


def test_a_sharded_step_on_the_gpu_matches_an_unsharded_one(tmp_path):
    import torch.distributed as dist

    from qkv.training import distributed
    from qkv.training.trainer import Trainer

    results = []
    for parallel in ("ddp", "fsdp"):
        info, device = distributed.setup("cuda", parallel)
        try:
            trainer = Trainer(tiny_gpt(), lm_loss, FixedBatches(8), train_cfg(max_steps=3, parallel=parallel,
                                                                              device="cuda"),
                              dist_info=info, device=device)
            results.append([loss for _, loss in trainer.fit().losses])
        finally:
            distributed.teardown(info)
    assert not dist.is_initialized()
    assert results[1] == pytest.approx(results[0], rel=1e-5)
    assert hardware.peak_memory_mb(torch.device("cuda")) > 0
