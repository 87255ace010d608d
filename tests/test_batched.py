"""The batched trainer equals K separate runs, masks divergence, prunes, and drops finished trials."""
import pytest
import torch

import linear_models as lm
from test_train import blobs

SINGLE = {"svm": lm.svm_loss_vectorized, "softmax": lm.softmax_loss_vectorized}


def separate_run(loss, X, y, W0, lr, reg, iters, batch, seed, schedule="none"):
    W, hist = lm.train_linear_classifier(SINGLE[loss], W0.clone(), X, y, lr, reg, iters, batch,
                                         generator=torch.Generator().manual_seed(seed), lr_schedule=schedule)
    return W, hist


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_batched_equals_separate_runs(loss):
    X, y = blobs(N=200, D=12, C=5)
    lrs, regs = [1e-3, 1e-2, 5e-2, 1e-1], [0.0, 1e-3, 1e-2, 1e-1]
    iters = [60, 60, 35, 60]
    schedules = ["none", "cosine", "step", "none"]
    W0 = 1e-3 * torch.randn(X.shape[1], 4, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(9))
    res = lm.train_linear_classifiers_batched(loss, X, y, lrs, regs, iters, 32, W_init=W0,
                                              generator=torch.Generator().manual_seed(7),
                                              lr_schedules=schedules, X_val=X, y_val=y, eval_every=20)
    for k in range(4):
        # A trial that stops early (k=2) consumed the same batches as the others up to its end.
        W_k, hist_k = separate_run(loss, X, y, W0[:, k, :], lrs[k], regs[k], iters[k], 32, 7, schedules[k])
        assert res.iterations[k] == iters[k] and res.status[k] == "completed"
        assert ((res.W[k] - W_k).abs().max() / W_k.abs().max()).item() < 1e-10
        assert torch.allclose(res.trial_loss_history(k), hist_k, rtol=1e-10, atol=0)
    assert res.val_steps == [20, 35, 40, 60]
    assert res.val_history.shape == (4, 4)
    assert torch.isnan(res.val_history[2:, 2]).all()  # trial 2 finished at 35


def test_divergent_trial_is_masked_and_others_unaffected():
    X, y = blobs(N=200, D=12, C=5)
    W0 = torch.zeros(X.shape[1], 3, 5, dtype=X.dtype)
    res = lm.train_linear_classifiers_batched("svm", X * 100, y, [1e-3, 1e30, 1e-2], [1e-3, 1e3, 0.0], 50, 16,
                                              W_init=W0, generator=torch.Generator().manual_seed(0), eval_every=10)
    assert res.status == ["completed", "diverged", "completed"]
    assert res.iterations[1] < 10
    assert not torch.isfinite(torch.tensor(res.diverged_loss[1]))
    W_k, _ = separate_run("svm", X * 100, y, W0[:, 2, :], 1e-2, 0.0, 50, 16, 0)
    assert torch.allclose(res.W[2], W_k, rtol=1e-10, atol=1e-12)


def test_callback_prunes_trials():
    X, y = blobs(N=200, D=12, C=5)
    seen = []

    def callback(progress):
        seen.append((progress.step, sorted(progress.active), set(progress.val_acc)))
        return [1] if progress.step == 20 else None

    res = lm.train_linear_classifiers_batched("softmax", X, y, [1e-2, 1e-2, 1e-2], [0.0, 0.1, 1.0], 60, 16,
                                              seed=0, X_val=X, y_val=y, eval_every=20, callback=callback)
    assert res.status == ["completed", "pruned", "completed"]
    assert res.iterations == [60, 20, 60]
    assert seen[0] == (20, [0, 1, 2], {0, 1, 2})
    assert seen[1][1] == [0, 2]
    assert torch.isnan(res.loss_history[20:, 1]).all()


def test_independent_batches_and_seed_reproducibility():
    X, y = blobs(N=200, D=12, C=5)
    a = lm.train_linear_classifiers_batched("svm", X, y, [1e-2, 1e-2], [1e-3, 1e-3], 30, 16, seed=1, shared_batches=False)
    b = lm.train_linear_classifiers_batched("svm", X, y, [1e-2, 1e-2], [1e-3, 1e-3], 30, 16, seed=1, shared_batches=False)
    assert torch.equal(a.W, b.W)
    assert not torch.allclose(a.loss_history[:, 0], a.loss_history[:, 1])  # different batches per trial


def test_bf16_matmuls_keep_accuracy():
    X, y = blobs(N=400, D=30, C=5, dtype=torch.float32)
    full = lm.train_linear_classifiers_batched("softmax", X, y, [1e-2], [1e-4], 200, 64, seed=0)
    low = lm.train_linear_classifiers_batched("softmax", X, y, [1e-2], [1e-4], 200, 64, seed=0, matmul_dtype=torch.bfloat16)
    acc = [lm.batched_accuracy(r.W.permute(1, 0, 2), X, y)[0].item() for r in (full, low)]
    assert abs(acc[0] - acc[1]) < 0.03


@pytest.mark.parametrize("kwargs,message", [
    (dict(learning_rates=[1e-3, -1.0]), r"learning_rate must be > 0, got -1.0"),
    (dict(regs=[0.0]), r"regs must have one value per trial \(2\), got 1"),
    (dict(num_iters=[10, 0]), r"num_iters must be an integer >= 1, got 0"),
])
def test_batched_bad_arguments(kwargs, message):
    X, y = blobs()
    args = dict(learning_rates=[1e-3, 1e-2], regs=[0.0, 0.1], num_iters=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        lm.train_linear_classifiers_batched("svm", X, y, batch_size=8, **args)
