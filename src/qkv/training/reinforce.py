"""REINFORCE with a per-prompt baseline: learning from a reward that has no gradient (tests passed, a right
answer), written once for any model and any reward.

Williams 1992, "Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement Learning"; the
recipe is nanochat's ``chat_rl.py`` (Karpathy 2025), itself a simplified GRPO (Shao et al. 2024): for each
prompt x of a batch,

1. **Samples**: G completions y_1 … y_G drawn from the model being trained, token by token at temperature τ,
   without gradient and without dropout (`Policy.sample`).
2. **Rewards** r_i = R(x, y_i) from the task's reward function, any number in [0, 1] (code: the fraction of hidden
   tests the program passes, run in the sandbox; the chat pipeline: an answer right or wrong).
3. **Advantage** A_i = r_i − mean_j r_j: the prompt's own mean reward is the baseline, so a prompt every sample
   solves (or none does) teaches nothing, and samples better than their siblings are pushed up. No division by
   the standard deviation and no KL term to a reference model (nanochat drops both).
4. **Objective**, with gradient through the log-probabilities only (`Policy.token_logprobs`, teacher-forced, EOS
   included when a sample ended with it):

       L = − Σ_i Σ_t A_i · log p(y_i,t | y_i,<t, x) / Σ_i |y_i|

   the policy gradient, averaged over every sampled token of the batch (nanochat's normalisation). Its
   gradient is the REINFORCE estimate of −∇ E[r]; `tests/unit/training/test_reinforce.py` checks that it is,
   and that the loop raises the mean reward of a toy policy.

`reinforce_loss(policy, prompts, reward, cfg)` is one step's loss; the task's batches choose the prompts and
the `Trainer` does the rest (optimizer, clipping, checkpoints, exact resume), as for any other loss.

Shape legend: P prompts in the batch, G samples per prompt, N = P·G samples, T the longest sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from qkv.generation.completion import Sample


@dataclass
class ReinforceConfig:
    samples_per_prompt: int = 8  # G: completions drawn for each prompt
    temperature: float = 1.0  # τ of the draws
    max_new_tokens: int = 96  # a sample longer than this is cut (and ends without EOS)

    def __post_init__(self):
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be at least 2 (the baseline is their mean), got "
                             f"{self.samples_per_prompt}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")


class Policy(Protocol):
    """What the loop needs of a model: draw completions, and score them with gradient."""

    def sample(self, prompts: Sequence[Any], n: int, temperature: float, max_new_tokens: int) -> list[list[Sample]]:
        """`n` completions of each prompt, without gradient (P lists of n)."""
        ...

    def token_logprobs(self, prompts: Sequence[Any], samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
        """(log p of each sampled token (N, T), with gradient; mask (N, T), True at real tokens); sample i
        belongs to prompt i // n of `prompts` repeated, i.e. `prompts` holds one entry per sample."""
        ...


# the reward function: P lists of G completion texts -> P lists of G rewards in [0, 1] (one call per batch, so a
# reward that runs programs can run them side by side)
BatchReward = Callable[[list[list[str]]], list[list[float]]]


OBJECTIVES = ("xent", "reinforce")  # a task that can fine-tune by REINFORCE: train.objective, cross-entropy or this


def check_objective(objective: str) -> None:
    """ValueError unless `objective` is one of `OBJECTIVES` (a config's ``__post_init__``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose {' or '.join(OBJECTIVES)}")


def advantages(rewards: Tensor) -> Tensor:
    """A = r − the mean reward of the same prompt: rewards (P, G) -> advantages (P, G).

    Example: [[1, 0, 0, 1], [1, 1, 1, 1]] -> [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0]]."""
    return rewards - rewards.mean(dim=1, keepdim=True)


def policy_gradient_loss(logp: Tensor, mask: Tensor, adv: Tensor) -> Tensor:
    """−Σ A · log p / Σ |y|: logp, mask (N, T), adv (N,) -> a scalar (module docstring, step 4)."""
    n_tokens = mask.sum().clamp(min=1)
    return -(logp * mask * adv[:, None]).sum() / n_tokens


def reinforce_loss(policy: Policy, prompts: Sequence[Any], reward: BatchReward, cfg: ReinforceConfig
                   ) -> tuple[Tensor, dict]:
    """One step's REINFORCE loss over `prompts` (module docstring), and what to log: the rewards' sum and count
    (the mean reward), the share of prompts whose samples disagree (the ones that teach), the sampled tokens."""
    G = cfg.samples_per_prompt
    drawn = policy.sample(prompts, G, cfg.temperature, cfg.max_new_tokens)  # P lists of G
    r = torch.tensor(reward([[s.text for s in group] for group in drawn]), dtype=torch.float32)  # (P, G)
    if r.shape != (len(prompts), G):
        raise ValueError(f"the reward function gave {tuple(r.shape)} rewards for {len(prompts)} prompts × {G} samples")
    adv = advantages(r).reshape(-1)  # (N,)
    flat = [s for group in drawn for s in group]  # N samples, prompt-major
    logp, mask = policy.token_logprobs([p for p in prompts for _ in range(G)], flat)  # (N, T), (N, T)
    loss = policy_gradient_loss(logp, mask.to(logp.dtype), adv.to(logp.device, logp.dtype))
    info = {"reward": (float(r.sum()), r.numel()), "useful_prompts": (int((r.std(dim=1) > 0).sum()), len(prompts)),
            "sample_tokens": (int(mask.sum()), len(flat)), "tokens": int(mask.sum())}
    return loss, info
