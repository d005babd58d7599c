"""The two kinds of training batch source, and how each resumes exactly.

- `GeneratorBatches`: batches drawn at random (with replacement) from one seeded `torch.Generator`, whose
  state is the whole data position (language-model windows, images);
- `EpochBatches`: the endless, length-bucketed epochs behind translation and chat, described below.

Every epoch is planned from (seed, epoch) alone: a random permutation of the examples, cut into random pools,
each pool sorted by length and cut into batches (the subclass says how), then the batch order shuffled. So
similar lengths share a batch while the order stays random, and the sampler's whole state is two integers
(epoch, position).

With `world_size` > 1 every process follows the same plan and takes every world_size-th row of each
batch (rows are sorted by length, so the shares are balanced): the global batch of a step is the batch a
single process would have drawn. A batch with fewer rows than processes (the tail of a pool) is merged
into the batch before it, so no process ever gets an empty share; that is the one way a run on several
processes can see other batches than a run on one.
"""

from __future__ import annotations

import numpy as np
import torch

from qkv.errors import QKVError


class GeneratorBatches:
    """A batch source whose randomness is one seeded `torch.Generator`: its state is the data position.

    Subclasses implement `next_batch()` drawing from ``self.generator``; peeking and resuming come from here.
    """

    def _start(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> dict:
        raise NotImplementedError

    def peek_batch(self) -> dict:
        """The next batch without consuming it (torch.compile's trial call)."""
        state = self.generator.get_state()
        batch = self.next_batch()
        self.generator.set_state(state)
        return batch

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class EpochBatches:
    """Subclasses give `_pool_batches(pool)` (a pool of example indices -> index arrays, one per batch) and
    `_collate(idx)` (index array -> batch dict); `self.pool` is the pool size in examples."""

    n_examples: int
    pool: int

    def _start(self, seed: int, rank: int, world_size: int) -> None:
        """Call at the end of the subclass's __init__, once `n_examples` and `pool` are set."""
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.pos = 0, 0
        self._plan = self._make_plan(0)

    def _pool_batches(self, pool: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def _collate(self, idx: np.ndarray) -> dict:
        raise NotImplementedError

    def _make_plan(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.n_examples)
        batches: list[np.ndarray] = []
        for p in range(0, len(perm), self.pool):
            pool = self._pool_batches(perm[p : p + self.pool])
            if self.world_size > 1:  # every process needs at least one row of every batch
                while len(pool) > 1 and len(pool[-1]) < self.world_size:
                    pool = pool[:-2] + [np.concatenate([pool[-2], pool[-1]])]
                if len(pool[-1]) < self.world_size:
                    raise QKVError(f"a batch of {len(pool[-1])} examples cannot be shared by {self.world_size} "
                                   "processes; use more data or a larger batch")
            batches += pool
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._plan)

    def next_batch(self) -> dict:
        if self.pos >= len(self._plan):
            self.epoch, self.pos = self.epoch + 1, 0
            self._plan = self._make_plan(self.epoch)
        idx = self._plan[self.pos]
        self.pos += 1
        return self._collate(idx[self.rank :: self.world_size])  # this process's rows of the global batch

    def peek_batch(self) -> dict:
        epoch, pos, plan = self.epoch, self.pos, self._plan
        batch = self.next_batch()
        self.epoch, self.pos, self._plan = epoch, pos, plan
        return batch

    def state_dict(self) -> dict:
        return {"epoch": torch.tensor(self.epoch), "pos": torch.tensor(self.pos)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._plan = self._make_plan(self.epoch)


class IndexBatches(EpochBatches):
    """Endless batches of example indices ({key: (B,)}), shuffled per epoch; resumable exactly. What a loss that
    reads its examples itself takes (REINFORCE's prompts: `qkv.training.reinforce`).

    Example: ``next(iter(IndexBatches(10, 4, key="problem")))`` -> ``{"problem": tensor([7, 2, 9, 0])}`` (some four)."""

    def __init__(self, n: int, batch_size: int, *, key: str = "index", seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if n <= 0:
            raise QKVError("no examples to draw batches from")
        self.batch_size, self.n_examples, self.pool, self.key = batch_size, n, batch_size * 50, key
        self._start(seed, rank, world_size)

    def _pool_batches(self, pool: np.ndarray) -> list[np.ndarray]:
        return [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]

    def _collate(self, idx: np.ndarray) -> dict:
        return {self.key: torch.as_tensor(idx, dtype=torch.long)}
