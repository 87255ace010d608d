"""Feature transforms (linear_models.data.whitening): what each one does to the training rows,
fitted on the training split alone, flips that commute with them, and pixel-space weights."""
import numpy as np
import pytest
import torch

import linear_models as lm
from linear_models.data import RawDataset, fit_feature_transform, preprocess, transform_splits

SHAPE = (4, 5, 3)  # H, W, C: 60 pixel features + the bias column


def rows(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 60, dtype=torch.float64, generator=g) @ torch.rand(60, 60, dtype=torch.float64, generator=g)
    return torch.cat([pixels, torch.ones(n, 1, dtype=torch.float64)], dim=1)


def pixel_cov(Z):
    centred = Z[:, :-1] - Z[:, :-1].mean(dim=0)
    return centred.t() @ centred / Z.shape[0]


def test_each_transform_does_what_it_says_on_the_training_rows():
    X = rows()
    standard = fit_feature_transform("standardize", X, SHAPE)(X)
    assert torch.allclose(standard[:, :-1].mean(dim=0), torch.zeros(60, dtype=X.dtype), atol=1e-12)
    assert torch.allclose(standard[:, :-1].std(dim=0, correction=0), torch.ones(60, dtype=X.dtype), atol=1e-12)
    zca = fit_feature_transform("zca", X, SHAPE, epsilon=0.0)(X)
    assert torch.allclose(pixel_cov(zca), torch.eye(60, dtype=X.dtype), atol=1e-8)
    pca = fit_feature_transform("pca", X, SHAPE, epsilon=0.0, components=7)(X)
    assert pca.shape == (400, 8) and torch.equal(pca[:, -1], torch.ones(400, dtype=X.dtype))
    assert torch.allclose(pixel_cov(pca), torch.eye(7, dtype=X.dtype), atol=1e-8)
    damped = fit_feature_transform("zca", X, SHAPE, epsilon=1.0)(X)
    assert torch.linalg.eigvalsh(pixel_cov(damped)).max() < 1.0  # epsilon shrinks every direction
    assert fit_feature_transform("mean", X, SHAPE)(X) is X


@pytest.mark.parametrize("kind", ["mean", "standardize", "zca", "pca"])
def test_weights_on_transformed_features_have_pixel_space_equivalents(kind):
    X = rows()
    transform = fit_feature_transform(kind, X, SHAPE, epsilon=0.05, components=9)
    Z = transform(X)
    W = torch.randn(Z.shape[1], 4, dtype=X.dtype, generator=torch.Generator().manual_seed(1))
    pixel_W = transform.pixel_weights(W)
    assert pixel_W.shape == (61, 4)
    assert torch.allclose(Z @ W, X @ pixel_W, rtol=0, atol=1e-9)  # the same scores: what templates show
    assert lm.class_templates(pixel_W, SHAPE).shape == (4, 4, 5, 3)


@pytest.mark.parametrize("kind", ["mean", "standardize", "zca", "pca"])
def test_a_mirror_fitted_transform_commutes_with_flips(kind):
    X = rows()
    transform = fit_feature_transform(kind, X, SHAPE, epsilon=0.05, components=9, mirror=True)
    pixels_flip = lm.FeatureFlip(lm.pixel_flip_permutation(SHAPE))
    assert torch.allclose(transform(pixels_flip(X)), transform.flip(transform(X)), rtol=0, atol=1e-9)
    if kind != "mean":
        assert fit_feature_transform(kind, X, SHAPE, components=9).flip is None  # not exact unfitted


def raw_dataset() -> RawDataset:
    """40 random training images (4 classes) and 10 test images."""
    g = np.random.default_rng(0)
    X_train = g.integers(0, 256, size=(40, *SHAPE), dtype=np.uint8)
    X_test = g.integers(0, 256, size=(10, *SHAPE), dtype=np.uint8)
    return RawDataset(X_train, np.repeat(np.arange(4), 10), X_test, np.arange(10) % 4, ["a", "b", "c", "d"])


def test_transforms_are_fitted_on_the_training_split_only():
    raw = raw_dataset()
    split = dict(validation_ratio=0.25, dtype=torch.float64, seed=1)
    first = preprocess(raw, **split)
    # Which raw images the training split took (raw pixel values, no scaling or centring).
    plain = preprocess(raw, **split, subtract_mean=False, scale=False, bias_trick=False)["X_train"]
    taken = {bytes(row.to(torch.uint8).numpy()) for row in plain}
    in_train = np.array([bytes(img.reshape(-1)) in taken for img in raw.X_train])
    assert in_train.sum() == 30
    # Every validation image and every test image replaced: the fitted transforms do not change.
    X_train = raw.X_train.copy()
    X_train[~in_train] = 255 - X_train[~in_train]
    second = preprocess(RawDataset(X_train, raw.y_train, 255 - raw.X_test, raw.y_test, raw.class_names), **split)
    assert torch.equal(first["X_train"], second["X_train"]) and not torch.equal(first["X_val"], second["X_val"])
    for kind in ("standardize", "zca", "pca"):
        a = transform_splits(first, kind, epsilon=0.01, components=5, mirror=True)
        b = transform_splits(second, kind, epsilon=0.01, components=5, mirror=True)
        for name in ("mean", "matrix", "scale"):
            ta, tb = getattr(a["transform"], name), getattr(b["transform"], name)
            assert (ta is None and tb is None) or torch.equal(ta, tb), (kind, name)
        assert torch.equal(a["X_train"], b["X_train"]) and not torch.equal(a["X_test"], b["X_test"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="whiten"), "preprocess must be one of ['mean', 'standardize', 'zca', 'pca'], got 'whiten'"),
    (dict(kind="pca", components=61), "components must be in [1, 60] (the number of pixel features), got 61"),
])
def test_bad_transform_values_are_refused(kwargs, message):
    with pytest.raises(ValueError) as e:
        fit_feature_transform(kwargs.pop("kind"), rows(), SHAPE, **kwargs)
    assert str(e.value) == message
