"""Feature transforms fitted on the training split: standardization, PCA and ZCA whitening.

They act on the assignment's features (pixels / 255 minus the channel mean, bias column last):

    mean         the assignment's features unchanged
    standardize  x_j -> (x_j - mu_j) / sigma_j, per feature
    zca          x -> (x - mu) U diag(1 / sqrt(s + eps)) U^T   (S = U diag(s) U^T, the covariance)
    pca          x -> (x - mu) U_k diag(1 / sqrt(s_k + eps))   (the k leading components)

mu, sigma and S come from the training rows only. Fitted ``mirror=True`` they are the statistics
of the training images together with their mirror images, so a horizontal flip commutes with the
transform: flipping whitened features is a column permutation (a sign per component for PCA),
which is how the trainer flips minibatches (linear_models.augment). Scores are linear in the
pixels, so a classifier W on transformed features equals pixel-space weights ``P W`` (P the
transform's matrix): :meth:`FeatureTransform.pixel_weights`, what class templates show.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..augment import FeatureFlip, pixel_flip_permutation

__all__ = ["PREPROCESSORS", "FeatureTransform", "Eigen", "covariance_eigen", "fit_feature_transform", "transform_splits"]

PREPROCESSORS = ("mean", "standardize", "zca", "pca")
_ROWS_PER_BLOCK = 8192  # covariance and transform in row blocks: no full-size centred copy


@dataclass
class FeatureTransform:
    """A fitted transform of feature rows (P pixel columns, then the bias column if bias_trick).

    mean (P,) and matrix (P, P') (standardize: P' = P, diagonal, kept as scale (P,)); both None
    for ``mean``, the identity. flip: the horizontal flip on the output features, or None where
    it is not exact (a transform fitted without ``mirror``).
    """

    kind: str
    image_shape: tuple
    bias_trick: bool
    mean: Optional[torch.Tensor] = None
    matrix: Optional[torch.Tensor] = None
    scale: Optional[torch.Tensor] = None
    flip: Optional[FeatureFlip] = None

    @property
    def num_pixels(self) -> int:
        H, W, C = self.image_shape
        return H * W * C

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """X (N, P[+1]) -> (N, P'[+1]) in X's dtype."""
        if self.kind == "mean":
            return X
        P, bias = self.num_pixels, int(self.bias_trick)
        width = self.matrix.shape[1] if self.matrix is not None else P
        out = torch.empty(X.shape[0], width + bias, dtype=X.dtype, device=X.device)
        mean, matrix, scale = (t.to(device=X.device, dtype=X.dtype) if t is not None else None
                               for t in (self.mean, self.matrix, self.scale))
        for start in range(0, X.shape[0], _ROWS_PER_BLOCK):
            block = X[start:start + _ROWS_PER_BLOCK, :P] - mean
            rows = out[start:start + _ROWS_PER_BLOCK]
            if matrix is not None:
                torch.mm(block, matrix, out=rows[:, :width])
            else:
                torch.mul(block, scale, out=rows[:, :width])
        if bias:
            out[:, width] = 1
        return out

    def pixel_weights(self, W: torch.Tensor) -> torch.Tensor:
        """W (P'[+1], C) on transformed features -> the same classifier on pixel features (P[+1], C).

        Scores x' W = (x - mu) P W + b, so the pixel weights are P W and the bias b - mu P W.
        """
        if self.kind == "mean":
            return W
        width = self.matrix.shape[1] if self.matrix is not None else self.num_pixels
        Wd = W[:width].to(torch.float64)
        if self.matrix is not None:
            pixels = self.matrix.to(device=W.device, dtype=torch.float64) @ Wd
        else:
            pixels = self.scale.to(device=W.device, dtype=torch.float64)[:, None] * Wd
        if not self.bias_trick:
            return pixels.to(W.dtype)
        bias = W[width:].to(torch.float64) - self.mean.to(device=W.device, dtype=torch.float64) @ pixels
        return torch.cat([pixels, bias]).to(W.dtype)


def _covariance(pixels: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """S (P, P) float64 = mean over rows of (x - mean)^T (x - mean), in row blocks."""
    P = pixels.shape[1]
    S = torch.zeros(P, P, dtype=pixels.dtype, device=pixels.device)
    for start in range(0, pixels.shape[0], _ROWS_PER_BLOCK):
        block = pixels[start:start + _ROWS_PER_BLOCK] - mean
        S.addmm_(block.t(), block)
    return S.double().div_(pixels.shape[0])


@dataclass(frozen=True)
class Eigen:
    """The training pixels' mean (P,) and covariance eigendecomposition s (P,) ascending, U (P, P),
    float64; what zca and pca need whatever their epsilon (the costly part of a fit)."""

    mean: torch.Tensor
    s: torch.Tensor
    U: torch.Tensor
    mirror: bool


def _pixel_mean(pixels: torch.Tensor, perm: torch.Tensor, mirror: bool) -> torch.Tensor:
    mean = pixels.double().mean(dim=0)
    return (mean + mean[perm]) / 2 if mirror else mean


def covariance_eigen(X_train: torch.Tensor, image_shape: Sequence[int], mirror: bool = False) -> Eigen:
    """Eigen of the pixel columns of X_train (N, P[+1]) (with their mirror images if ``mirror``)."""
    perm = pixel_flip_permutation(image_shape, bias_trick=False).to(X_train.device)
    pixels = X_train[:, :perm.numel()]
    mean = _pixel_mean(pixels, perm, mirror)
    S = _covariance(pixels, mean.to(pixels.dtype))
    if mirror:
        S = (S + S[perm][:, perm]) / 2
    s, U = torch.linalg.eigh(S)
    return Eigen(mean, s.clamp_(min=0.0), U, mirror)


def fit_feature_transform(kind: str, X_train: torch.Tensor, image_shape: Sequence[int], *, epsilon: float = 0.1,
                          components: Optional[int] = None, mirror: bool = False,
                          bias_trick: bool = True, eigen: Optional[Eigen] = None) -> FeatureTransform:
    """Fit ``kind`` on the training rows X_train (N, P[+1]) only; see the module docstring.

    epsilon (zca, pca): added to the covariance's eigenvalues, in the features' squared units.
    components (pca): how many leading components to keep (<= P). mirror: fit on the rows and
    their mirror images, so that flips commute with the transform. eigen: covariance_eigen of
    the same rows and mirror, to reuse (zca, pca).
    """
    if kind not in PREPROCESSORS:
        raise ValueError(f"preprocess must be one of {list(PREPROCESSORS)}, got {kind!r}")
    image_shape = tuple(int(s) for s in image_shape)
    perm = pixel_flip_permutation(image_shape, bias_trick=False).to(X_train.device)
    out_flip = FeatureFlip(pixel_flip_permutation(image_shape, bias_trick))
    if kind == "mean":  # a per-channel mean is mirror-symmetric: flips commute
        return FeatureTransform(kind, image_shape, bias_trick, flip=out_flip)
    P = perm.numel()
    pixels = X_train[:, :P]
    flip = out_flip if mirror else None
    if kind == "standardize":
        mean = _pixel_mean(pixels, perm, mirror)
        var = (pixels.double() - mean).square_().mean(dim=0)
        if mirror:
            var = (var + var[perm]) / 2
        return FeatureTransform(kind, image_shape, bias_trick, mean=mean, scale=var.sqrt_().clamp_(min=1e-6).reciprocal_(),
                                flip=flip)
    if eigen is None:
        eigen = covariance_eigen(X_train, image_shape, mirror)
    elif eigen.mirror != mirror:
        raise ValueError(f"eigen was computed with mirror={eigen.mirror}, not mirror={mirror}")
    mean, s, U = eigen.mean, eigen.s, eigen.U
    if kind == "zca":
        return FeatureTransform(kind, image_shape, bias_trick, mean=mean,
                                matrix=(U * (s + epsilon).rsqrt()) @ U.t(), flip=flip)
    k = P if components is None else int(components)
    if not 1 <= k <= P:
        raise ValueError(f"components must be in [1, {P}] (the number of pixel features), got {components!r}")
    U_k, s_k = U[:, -k:].flip(1), s[-k:].flip(0)
    if mirror:  # each leading component is mirror-symmetric (+1) or antisymmetric (-1)
        sign = torch.sign((U_k[perm] * U_k).sum(dim=0))
        sign = torch.cat([sign, sign.new_ones(int(bias_trick))])
        flip = FeatureFlip(torch.arange(k + int(bias_trick)), sign)
    return FeatureTransform(kind, image_shape, bias_trick, mean=mean, matrix=U_k * (s_k + epsilon).rsqrt(), flip=flip)


def transform_splits(data: dict, kind: str, *, epsilon: float = 0.1, components: Optional[int] = None,
                     mirror: bool = False, bias_trick: bool = True, eigen: Optional[Eigen] = None) -> dict:
    """preprocess()'s dict with X_train / X_val / X_test transformed by ``kind`` fitted on X_train
    alone; adds ``transform`` (the FeatureTransform). Other entries are shared, not copied."""
    transform = fit_feature_transform(kind, data["X_train"], data["image_shape"], epsilon=epsilon,
                                      components=components, mirror=mirror, bias_trick=bias_trick, eigen=eigen)
    out = dict(data)
    for split in ("train", "val", "test"):
        out[f"X_{split}"] = transform(data[f"X_{split}"])
    out["transform"] = transform
    return out
