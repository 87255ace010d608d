"""Training-time augmentation of minibatches on the device: random horizontal flips.

A flip mirrors each image left-right. On the features the trainer sees it is a fixed map
``x -> x[perm] * sign``: a column permutation for pixels (and for mean-subtracted, standardized
or ZCA-whitened pixels fitted mirror-symmetrically), a sign per component for PCA (see
linear_models.data.whitening). The trainer flips each training row with probability 1/2, drawn
from its own seeded (CPU) generator, so validation and test data are never flipped and the minibatch
indices are the same with and without flips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .rng import random_coins

__all__ = ["FeatureFlip", "pixel_flip_permutation"]


def pixel_flip_permutation(image_shape: Sequence[int], bias_trick: bool = True) -> torch.Tensor:
    """perm (D,) long: feature j of a mirrored row is feature perm[j] of the row.

    Rows are images flattened in (H, W, C) order, D = H*W*C (+1: the bias column maps to itself).
    """
    H, W, C = (int(s) for s in image_shape)
    perm = torch.arange(H * W * C).view(H, W, C).flip(1).reshape(-1)
    return torch.cat([perm, torch.tensor([H * W * C])]) if bias_trick else perm


@dataclass(frozen=True)
class FeatureFlip:
    """A horizontal flip on feature rows: ``x_flipped = x[..., perm] * sign`` (sign None: 1).

    perm (D,) long; sign (D,) float or None.
    """

    perm: torch.Tensor
    sign: Optional[torch.Tensor] = None

    def to(self, device, dtype) -> "FeatureFlip":
        sign = self.sign.to(device=device, dtype=dtype) if self.sign is not None else None
        return FeatureFlip(self.perm.to(device), sign)

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """X (..., D) -> the mirrored rows (..., D)."""
        flipped = X.index_select(-1, self.perm)
        return flipped.mul_(self.sign) if self.sign is not None else flipped

    def randomly_(self, X: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """X (..., D) with each row mirrored with probability 1/2 (coins from ``generator``, drawn
        on its device: the CPU for linear_models.make_generator, the same coins on every device)."""
        return self.where(X, random_coins(X.shape[:-1], X.device, generator))

    def where(self, X: torch.Tensor, coin: torch.Tensor) -> torch.Tensor:
        """X (..., D) with the rows where ``coin`` (...) bool is True mirrored."""
        return torch.where(coin.unsqueeze(-1), self(X), X)
