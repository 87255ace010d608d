"""Seeded random draws that are the same on every device.

A CPU generator and a CUDA generator with the same seed give different numbers, so the trainers
draw on the CPU (the generator's own device) and move the result to the data's device: a seed
then gives the same initial weights, minibatches and flips on a CPU and on any GPU. The batched
trainer draws the indices of a block of steps at once, so moving them is one copy per block,
not a host round trip per step.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

__all__ = ["make_generator", "random_indices", "random_coins", "to_device"]


def make_generator(device, seed: Optional[int]) -> Optional[torch.Generator]:
    """A CPU torch.Generator seeded with ``seed`` (None -> the global RNG).

    ``device`` is where the draws are used; they are made on the CPU for every device (see the
    module docstring), so it does not change the generator.
    """
    if seed is None:
        return None
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


def _draw_device(generator: Optional[torch.Generator]) -> torch.device:
    """Where a draw from ``generator`` is made: its own device (a CUDA generator passed in keeps
    drawing on its GPU); the global RNG draws on the CPU."""
    return generator.device if generator is not None else torch.device("cpu")


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``; a CPU -> CUDA copy goes through pinned memory without waiting for the GPU."""
    device = torch.device(device)
    if t.device == device or (device.type == t.device.type and device.index is None):
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def random_indices(high: int, shape: Sequence[int], device, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Integers in [0, high) of ``shape`` (int64) on ``device``, drawn as described above."""
    idx = torch.randint(high, tuple(shape), device=_draw_device(generator), generator=generator)
    return to_device(idx, device)


def random_coins(shape: Sequence[int], device, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Fair coins of ``shape`` (bool, True with probability 1/2) on ``device``."""
    coins = torch.rand(tuple(shape), device=_draw_device(generator), generator=generator) < 0.5
    return to_device(coins, device)
