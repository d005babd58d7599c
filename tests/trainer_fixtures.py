"""A toy GPT, a fixed batch source and the LM loss: what the Trainer's unit tests train."""

import torch

from qkv.models import GPT, GPTConfig
from qkv.training.config import TrainConfig

V, T = 16, 8


def tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": V, "max_seq_len": T, "d_model": 16, "n_layers": 1, "n_heads": 2, **kw}))


def train_cfg(**kw) -> TrainConfig:
    base = dict(max_steps=1, batch_size=8, lr=1e-2, warmup_steps=0, device="cpu", progress=False, eval_interval=1,
                eval_iters=0)
    return TrainConfig(**{**base, **kw})


class FixedBatches:
    """One fixed (8, T) batch, handed out `micro` rows per `next_batch` call, in order, round and round."""

    def __init__(self, micro: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        chunk = torch.randint(0, V, (8, T + 1), generator=g)  # (8, T+1)
        self.x, self.y = chunk[:, :-1], chunk[:, 1:]  # (8, T) each
        self.micro, self.pos, self.calls = micro, 0, 0

    def next_batch(self):
        i = self.pos
        self.pos = (self.pos + self.micro) % len(self.x)
        self.calls += 1
        return {"idx": self.x[i : i + self.micro], "targets": self.y[i : i + self.micro]}

    def state_dict(self) -> dict:
        return {"pos": torch.tensor([self.pos])}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"][0])


def lm_loss(model, batch):
    return model(batch["idx"], batch["targets"])[1], {"tokens": batch["idx"].numel()}
