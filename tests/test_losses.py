"""Losses: naive == vectorized == batched, gradients vs numerical and autograd, stability."""
import math

import pytest
import torch

import linear_models as lm

LOSSES = [
    ("svm", lm.svm_loss_naive, lm.svm_loss_vectorized),
    ("softmax", lm.softmax_loss_naive, lm.softmax_loss_vectorized),
]


def make_problem(N=40, D=25, C=10, seed=0, dtype=torch.float64, scale=1e-2):
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(D, C, generator=g, dtype=dtype)
    X = torch.randn(N, D, generator=g, dtype=dtype)
    y = torch.randint(C, (N,), generator=g)
    return W, X, y


def rel(a, b):
    return ((a - b).abs().max() / (a.abs().max() + b.abs().max()).clamp(min=1e-30)).item()


@pytest.mark.parametrize("name,naive,vectorized", LOSSES)
@pytest.mark.parametrize("reg", [0.0, 0.05, 3.0])
def test_naive_equals_vectorized(name, naive, vectorized, reg):
    W, X, y = make_problem()
    loss_n, dW_n = naive(W, X, y, reg)
    loss_v, dW_v = vectorized(W, X, y, reg)
    assert abs(loss_n.item() - loss_v.item()) / abs(loss_n.item()) < 1e-10
    assert rel(dW_n, dW_v) < 1e-10


@pytest.mark.parametrize("name,naive,vectorized", LOSSES)
def test_gradient_matches_numerical(name, naive, vectorized):
    W, X, y = make_problem(scale=1e-1)
    for reg in (0.0, 0.1):
        _, dW = vectorized(W, X, y, reg)
        worst = lm.grad_check_sparse(lambda w: vectorized(w, X, y, reg)[0], W.clone(), dW,
                                     num_checks=20, h=1e-6, generator=torch.Generator().manual_seed(1),
                                     verbose=False)
        assert worst < 1e-5


@pytest.mark.parametrize("name,naive,vectorized", LOSSES)
def test_gradient_matches_autograd(name, naive, vectorized):
    W, X, y = make_problem(scale=1e-1)
    Wg = W.clone().requires_grad_(True)
    if name == "svm":
        scores = X @ Wg
        margins = (scores - scores.gather(1, y[:, None]) + 1).clamp(min=0)
        margins = margins * (1 - torch.nn.functional.one_hot(y, W.shape[1]))
        loss = margins.sum() / X.shape[0] + 0.2 * (Wg * Wg).sum()
    else:
        loss = torch.nn.functional.cross_entropy(X @ Wg, y) + 0.2 * (Wg * Wg).sum()
    loss.backward()
    loss_v, dW = vectorized(W, X, y, 0.2)
    assert abs(loss.item() - loss_v.item()) < 1e-12
    assert rel(Wg.grad, dW) < 1e-10


@pytest.mark.parametrize("name,expected", [("svm", 9.0), ("softmax", math.log(10))])
def test_loss_at_tiny_weights(name, expected):
    W, X, y = make_problem(N=200, D=50, scale=1e-9)
    loss, _ = lm.batched_loss_function(name)(W.unsqueeze(1), X, y, 0.0)
    assert loss.item() == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("name,naive,vectorized", LOSSES)
def test_large_scores_are_finite(name, naive, vectorized):
    W, X, y = make_problem(dtype=torch.float32)
    W = W / W.abs().max() * 1e4 / X.abs().sum(1).max()  # scores up to ~1e4
    X = X * 1.0
    W[:, 0] = 1e4 / X.shape[1]
    loss, dW = vectorized(W, X, y, 1e-3)
    assert torch.isfinite(loss) and torch.isfinite(dW).all()


@pytest.mark.parametrize("name", ["svm", "softmax"])
def test_batched_equals_k_separate(name):
    W, X, y = make_problem(C=7)
    Ws = torch.stack([W * s for s in (0.5, 1.0, 2.0)], dim=1)  # (D, 3, C)
    regs = torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64)
    loss_b, dW_b = lm.batched_loss_function(name)(Ws.contiguous(), X, y, regs)
    single = dict(LOSSES_BY_NAME)[name]
    for k in range(3):
        loss_k, dW_k = single(Ws[:, k, :].contiguous(), X, y, regs[k].item())
        assert abs(loss_b[k].item() - loss_k.item()) < 1e-12
        assert rel(dW_b[:, k, :], dW_k) < 1e-12


@pytest.mark.parametrize("name", ["svm", "softmax"])
def test_batched_per_trial_minibatches(name):
    W, X, y = make_problem(N=30, C=5)
    Ws = torch.stack([W, 2 * W], dim=1).contiguous()
    Xk = torch.stack([X, X.flip(0)])
    yk = torch.stack([y, y.flip(0)])
    loss_b, dW_b = lm.batched_loss_function(name)(Ws, Xk, yk, 0.1)
    single = dict(LOSSES_BY_NAME)[name]
    for k in range(2):
        loss_k, dW_k = single(Ws[:, k, :].contiguous(), Xk[k], yk[k], 0.1)
        assert abs(loss_b[k].item() - loss_k.item()) < 1e-12
        assert rel(dW_b[:, k, :], dW_k) < 1e-12


LOSSES_BY_NAME = [("svm", lm.svm_loss_vectorized), ("softmax", lm.softmax_loss_vectorized)]


@pytest.mark.parametrize("name,naive,vectorized", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_preserved(name, naive, vectorized, dtype):
    W, X, y = make_problem(dtype=dtype)
    for f in (naive, vectorized):
        loss, dW = f(W, X, y, 0.1)
        assert loss.dtype == dtype and dW.dtype == dtype
        assert loss.device == X.device and dW.device == X.device
        assert dW.shape == W.shape


def test_unknown_loss_name():
    with pytest.raises(ValueError, match=r"loss must be one of \['softmax', 'svm'\], got 'hinge'"):
        lm.batched_loss_function("hinge")
