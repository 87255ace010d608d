"""Momentum, Nesterov and averaged SGD and random flips in the batched trainer: each equals a
textbook loop written here with the vectorized losses, and a trial's result does not depend on
the other trials of its stack (float64, < 1e-10 relative)."""
import pytest
import torch

import linear_models as lm
from test_train import blobs

SINGLE = {"svm": lm.svm_loss_vectorized, "softmax": lm.softmax_loss_vectorized}
LOSSES = ["svm", "softmax", "svm"]
LRS, REGS, ITERS = [1e-2, 3e-2, 5e-2], [1e-3, 0.0, 1e-2], [40, 55, 30]
MOMENTUM, START = [0.5, 0.9, 0.0], [0.0, 0.5, 0.8]


def reference(loss, X, y, W0, lr, reg, iters, batch, seed, optimizer, momentum=0.0, start=0.0, flip=None):
    """The update rules written out, one trial at a time; returns the weights it is judged by."""
    gen = torch.Generator().manual_seed(seed)
    coins = torch.Generator().manual_seed(seed + 1)
    W, V = W0.clone(), torch.zeros_like(W0)
    first = min(int(start * iters), iters - 1)
    A = None
    for t in range(iters):
        idx = torch.randint(X.shape[0], (batch,), generator=gen)
        Xb, yb = X[idx], y[idx]
        if flip is not None:
            mirrored = torch.rand(batch, generator=coins) < 0.5
            Xb = torch.where(mirrored[:, None], flip(Xb), Xb)
        _, dW = SINGLE[loss](W, Xb, yb, reg)
        if optimizer in ("momentum", "nesterov"):
            V = momentum * V + dW
            W = W - lr * (dW + momentum * V if optimizer == "nesterov" else V)
        else:
            W = W - lr * dW
        if optimizer == "asgd" and t >= first:
            A = W.clone() if A is None else A + (W - A) / (t - first + 1)
    return A if optimizer == "asgd" else W


def stack(X, y, W0, optimizer, shared=True, flip=None, lrs=LRS, regs=REGS):
    K = len(lrs)
    return lm.train_linear_classifiers_batched(
        LOSSES[:K], X, y, lrs, regs, ITERS[:K], 16, W_init=W0[:, :K].contiguous(), seed=5, optimizer=optimizer,
        momentum=MOMENTUM[:K], average_start=START[:K], shared_batches=shared, flip=flip, X_val=X, y_val=y,
        eval_every=10)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def data():
    X, y = blobs(N=120, D=12, C=4)
    W0 = 1e-3 * torch.randn(X.shape[1], 3, 4, dtype=X.dtype, generator=torch.Generator().manual_seed(3))
    return X, y, W0


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "asgd"])
@pytest.mark.parametrize("flipped", [False, True])
def test_stacked_trials_equal_the_textbook_update(optimizer, flipped):
    X, y, W0 = data()
    flip = lm.FeatureFlip(torch.randperm(X.shape[1], generator=torch.Generator().manual_seed(1))) if flipped else None
    res = stack(X, y, W0, optimizer, flip=flip)
    assert res.status == ["completed"] * 3
    for k in range(3):
        ref = reference(LOSSES[k], X, y, W0[:, k], LRS[k], REGS[k], ITERS[k], 16, 5, optimizer, MOMENTUM[k],
                        START[k], flip)
        assert rel(res.W[k], ref) < 1e-10, (optimizer, k)
        # What was validated is what is returned: the averaged weights for asgd.
        pred = lm.predict_linear_classifier(res.W[k], X)
        assert torch.equal(res.val_predictions[k], pred)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "asgd"])
@pytest.mark.parametrize("shared", [True, False])
def test_a_trial_does_not_depend_on_the_other_trials_of_its_stack(optimizer, shared):
    X, y, W0 = data()
    flip = lm.FeatureFlip(lm.pixel_flip_permutation((2, 2, 3)))  # D = 12 + 1: blobs' last column is a bias
    a = stack(X, y, W0, optimizer, shared, flip)
    b = stack(X, y, W0, optimizer, shared, flip, lrs=[LRS[0], 7e-2, 1e-3], regs=[REGS[0], 5e-2, 0.0])
    assert rel(a.W[0], b.W[0]) < 1e-10
    assert torch.allclose(a.trial_loss_history(0), b.trial_loss_history(0), rtol=1e-10, atol=0)


def test_averaging_returns_the_mean_of_the_iterates():
    X, y, W0 = data()
    kwargs = dict(W_init=W0[:, :1].contiguous(), seed=2)
    iterates = []

    def keep(progress):
        iterates.append(progress.weights[:, 0].clone())

    plain = lm.train_linear_classifiers_batched("softmax", X, y, [0.05], [1e-3], 40, 16, eval_every=1,
                                                callback=keep, **kwargs)
    averaged = lm.train_linear_classifiers_batched("softmax", X, y, [0.05], [1e-3], 40, 16, optimizer="asgd",
                                                   average_start=0.5, **kwargs)
    assert rel(plain.W[0], iterates[-1]) < 1e-12
    assert rel(averaged.W[0], torch.stack(iterates[20:]).mean(dim=0)) < 1e-10  # steps 20..39
    assert rel(averaged.W[0], plain.W[0]) > 1e-3


def test_momentum_trial_that_diverges_leaves_the_others_alone():
    X, y, W0 = data()
    res = lm.train_linear_classifiers_batched(["svm", "svm"], X * 100, y, [1e-2, 1e30], [1e-3, 1e3], 30, 16,
                                              W_init=W0[:, :2].contiguous(), seed=5, optimizer="nesterov",
                                              momentum=0.9)
    alone = lm.train_linear_classifiers_batched(["svm"], X * 100, y, [1e-2], [1e-3], 30, 16,
                                                W_init=W0[:, :1].contiguous(), seed=5, optimizer="nesterov",
                                                momentum=0.9)
    assert res.status == ["completed", "diverged"]
    assert rel(res.W[0], alone.W[0]) < 1e-10


def test_flips_apply_to_training_minibatches_only():
    X, y, W0 = data()
    flip = lm.FeatureFlip(lm.pixel_flip_permutation((2, 2, 3)))  # an involution of the 12 + 1 columns
    symmetric = (X + flip(X)) / 2  # every row is its own mirror image: flips change nothing
    args = ("svm", symmetric, y, [1e-2], [1e-3], 30, 16)
    kw = dict(W_init=W0[:, :1].contiguous(), seed=5)
    assert torch.equal(lm.train_linear_classifiers_batched(*args, **kw).W,
                       lm.train_linear_classifiers_batched(*args, flip=flip, **kw).W)
    # On other rows they do change training, never the validation data scored at check points.
    flipped = lm.train_linear_classifiers_batched("svm", X, y, [1e-2], [1e-3], 30, 16, flip=flip, X_val=X, y_val=y,
                                                  eval_every=10, **kw)
    plain = lm.train_linear_classifiers_batched("svm", X, y, [1e-2], [1e-3], 30, 16, **kw)
    assert rel(flipped.W[0], plain.W[0]) > 1e-3
    assert torch.equal(flipped.val_predictions[0], lm.predict_linear_classifier(flipped.W[0], X))
    coins = flip.randomly_(torch.arange(4000.0).view(-1, 1).expand(-1, X.shape[1]) * 0 + torch.arange(X.shape[1]),
                           torch.Generator().manual_seed(0))
    share = (coins != torch.arange(X.shape[1])).any(dim=1).double().mean().item()
    assert 0.45 < share < 0.55  # about half the rows mirrored


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="adam"), "optimizer must be one of ['sgd', 'momentum', 'nesterov', 'asgd'], got 'adam'"),
    (dict(optimizer="momentum", momentum=1.0), "momentum must be in [0, 1), got 1.0"),
    (dict(optimizer="asgd", average_start=[0.5, -0.1]), "average_start must be in [0, 1), got -0.1"),
    (dict(momentum=[0.9]), "momentum must have one value per trial (2), got 1"),
])
def test_bad_optimizer_values_are_refused_naming_the_parameter(kwargs, message):
    X, y, _ = data()
    with pytest.raises(ValueError) as e:
        lm.train_linear_classifiers_batched("svm", X, y, [1e-2, 1e-2], [0.0, 0.0], 5, 8, seed=0, **kwargs)
    assert str(e.value) == message
