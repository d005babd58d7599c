"""REINFORCE (`qkv.training.reinforce`): the advantage is the reward minus the prompt's mean, the loss's gradient
is the REINFORCE estimate, and the loop raises the mean reward of a toy policy; bad settings are refused."""

import pytest
import torch

from qkv.generation.completion import Sample
from qkv.training.reinforce import ReinforceConfig, advantages, policy_gradient_loss, reinforce_loss


def test_advantage_is_the_reward_minus_the_prompts_mean():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert torch.equal(advantages(r), torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]))


def test_the_gradient_is_the_reinforce_estimate():
    """One-token samples from softmax(θ): ∂L/∂θ = −Σ_i A_i (onehot(y_i) − p) / N, by hand."""
    theta = torch.randn(5, requires_grad=True)
    ys = torch.tensor([0, 3, 3, 1])
    adv = torch.tensor([0.5, -0.25, 1.0, -1.25])
    logp = theta.log_softmax(-1)[ys][:, None]  # (N, 1)
    policy_gradient_loss(logp, torch.ones_like(logp, dtype=torch.bool), adv).backward()
    p = theta.detach().softmax(-1)
    expected = -sum(a * (torch.nn.functional.one_hot(y, 5).float() - p) for a, y in zip(adv, ys, strict=True)) / 4
    torch.testing.assert_close(theta.grad, expected)


class ToyPolicy:
    """A prompt-independent categorical over 4 tokens, one token per completion; token 2 is the right answer."""

    def __init__(self):
        self.logits = torch.nn.Parameter(torch.zeros(4))

    def sample(self, prompts, n, temperature, max_new_tokens):
        with torch.no_grad():
            probs = (self.logits / temperature).softmax(-1)
            return [[Sample([int(t)], str(int(t))) for t in torch.multinomial(probs, n, replacement=True)]
                    for _ in prompts]

    def token_logprobs(self, prompts, samples):
        ids = torch.tensor([s.ids[0] for s in samples])
        return self.logits.log_softmax(-1)[ids][:, None], torch.ones(len(samples), 1, dtype=torch.bool)


def test_the_loop_raises_the_mean_reward_of_a_toy_policy():
    torch.manual_seed(0)
    policy = ToyPolicy()
    opt = torch.optim.SGD([policy.logits], lr=0.5)
    cfg = ReinforceConfig(samples_per_prompt=8, temperature=1.0, max_new_tokens=1)

    def reward(groups):
        return [[1.0 if t == "2" else 0.0 for t in g] for g in groups]

    rewards = []
    for _ in range(60):
        loss, info = reinforce_loss(policy, ["x"] * 4, reward, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total, count = info["reward"]
        rewards.append(total / count)
    assert sum(rewards[:5]) / 5 < 0.5 and sum(rewards[-5:]) / 5 > 0.9, rewards
    assert policy.logits.softmax(-1)[2] > 0.9


def test_a_wrongly_shaped_reward_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rewards for 2 prompts"):
        reinforce_loss(ToyPolicy(), ["a", "b"], lambda groups: [[1.0]], ReinforceConfig(samples_per_prompt=2))
    for bad in ({"samples_per_prompt": 1}, {"temperature": 0.0}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            ReinforceConfig(**bad)
