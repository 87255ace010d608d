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


@pytest.mark.parametrize("shared", [True, False])
def test_mixed_losses_equal_separate_runs(shared):
    # SVM and softmax trials share the matmuls of one stack; listed interleaved on purpose
    # (several head segments), and trials leave the stack at different steps.
    X, y = blobs(N=200, D=12, C=5)
    losses = ["svm", "softmax", "softmax", "svm", "svm"]
    lrs, regs, iters = [1e-2, 5e-2, 1e-1, 3e-2, 1e30], [1e-3, 1e-2, 0.0, 1e-1, 1e3], [60, 60, 35, 60, 60]
    # Independent batches are drawn for the trials still training: keep the leaving ones the same
    # in the reference (no diverging trial, whose step depends on its loss).
    K = 5 if shared else 4
    losses, lrs, regs, iters = losses[:K], lrs[:K], regs[:K], iters[:K]
    W0 = 1e-3 * torch.randn(X.shape[1], K, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(9))
    res = lm.train_linear_classifiers_batched(losses, X * 10, y, lrs, regs, iters, 32, W_init=W0,
                                              generator=torch.Generator().manual_seed(7), X_val=X, y_val=y,
                                              eval_every=20, shared_batches=shared)
    assert res.status == ["completed"] * 4 + ["diverged"] * (K - 4)
    for k in range(4):
        if shared:
            W_k, hist_k = separate_run(losses[k], X * 10, y, W0[:, k, :], lrs[k], regs[k], iters[k], 32, 7)
        else:  # independent batches: the same trial alone in a one-loss stack
            alone = lm.train_linear_classifiers_batched(losses[k], X * 10, y, lrs, regs, iters, 32, W_init=W0,
                                                        generator=torch.Generator().manual_seed(7),
                                                        shared_batches=False)
            W_k, hist_k = alone.W[k], alone.trial_loss_history(k)
        assert ((res.W[k] - W_k).abs().max() / W_k.abs().max()).item() < 1e-10, (k, losses[k])
        assert torch.allclose(res.trial_loss_history(k), hist_k, rtol=1e-10, atol=0)


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_batched_equals_separate_runs_under_strong_weight_decay(loss):
    # 2 * lr * reg = 0.5, 1 (decay factor exactly 0), 3 (factor -2, W grows 2x per step), 1e-3,
    # 4e-4: exercises the deferred weight decay and when it is folded into W.
    X, y = blobs(N=200, D=12, C=5)
    lrs, regs = [0.25, 0.5, 1.5, 1e-3, 0.2], [1.0, 1.0, 1.0, 0.5, 1e-3]
    W0 = 1e-3 * torch.randn(X.shape[1], 5, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(9))
    res = lm.train_linear_classifiers_batched(loss, X, y, lrs, regs, 45, 32, W_init=W0,
                                              generator=torch.Generator().manual_seed(7), eval_every=30)
    for k in range(5):
        W_k, hist_k = separate_run(loss, X, y, W0[:, k, :], lrs[k], regs[k], 45, 32, 7)
        assert res.status[k] == "completed"
        assert ((res.W[k] - W_k).abs().max() / W_k.abs().max()).item() < 1e-10
        assert torch.allclose(res.trial_loss_history(k), hist_k, rtol=1e-10, atol=0)


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_step_matches_public_kernels(loss):
    # The trainer's fused step equals W -= lr * dW with (loss, dW) from the public kernel.
    from linear_models.sgd_step import _sgd_step_
    X, y = blobs(N=50, D=12, C=5)
    W = 0.1 * torch.randn(X.shape[1], 3, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(1))
    reg = torch.tensor([0.0, 0.1, 2.0], dtype=X.dtype)
    lr = torch.tensor([0.1, 0.01, 0.2], dtype=X.dtype)
    loss_ref, dW = lm.batched_loss_function(loss)(W, X, y, reg)
    W_ref = W - dW * lr.view(1, 3, 1)
    for scale in (None, torch.tensor([1.0, 0.5, 2.0], dtype=X.dtype)):
        for fold in (True, False):
            V = W.clone() if scale is None else W / scale.view(1, 3, 1)
            s = None if scale is None else scale.clone()
            alive = torch.ones(3, dtype=torch.bool)
            loss_k = _sgd_step_(loss, V, X, y, reg, lr, alive, scale=s, fold=fold)
            W_new = V if s is None else V * s.view(1, 3, 1)
            assert torch.allclose(loss_k, loss_ref, rtol=1e-12, atol=0)
            assert torch.allclose(W_new, W_ref, rtol=1e-12, atol=1e-15)
            assert alive.all()


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_step_freezes_a_trial_with_non_finite_loss(loss):
    from linear_models.sgd_step import _sgd_step_
    X, y = blobs(N=50, D=12, C=5)
    W = 0.1 * torch.randn(X.shape[1], 3, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(1))
    W[0, 1, 0] = float("inf")  # trial 1's scores (and softmax gradients) become inf / NaN
    reg, lr = torch.full((3,), 0.1, dtype=X.dtype), torch.full((3,), 0.1, dtype=X.dtype)
    _, dW = lm.batched_loss_function(loss)(W[:, [0, 2]].contiguous(), X, y, reg[:2])
    alive = torch.ones(3, dtype=torch.bool)
    W_new = W.clone()
    loss_k = _sgd_step_(loss, W_new, X, y, reg, lr, alive)
    assert alive.tolist() == [True, False, True] and not torch.isfinite(loss_k[1])
    assert torch.equal(W_new[:, 1], W[:, 1])  # frozen, no NaN leaked in
    assert torch.allclose(W_new[:, [0, 2]], W[:, [0, 2]] - 0.1 * dW, rtol=1e-12, atol=1e-15)


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


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_loss_every_measures_fewer_losses_and_changes_nothing_else(loss):
    X, y = blobs(N=200, D=12, C=5)
    lrs, regs, iters = [1e-2, 1e-1, 1e30], [1e-2, 1e-3, 1e3], [60, 33, 60]  # trial 2 diverges
    W0 = 1e-3 * torch.randn(X.shape[1], 3, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(9))
    runs = [lm.train_linear_classifiers_batched(loss, X * 10, y, lrs, regs, iters, 16, W_init=W0,
                                                generator=torch.Generator().manual_seed(3), X_val=X * 10,
                                                y_val=y, eval_every=25, loss_every=every) for every in (1, 7)]
    every_step, sparse = runs
    assert torch.equal(every_step.W[:2], sparse.W[:2])
    assert every_step.status == sparse.status == ["completed", "completed", "diverged"]
    assert every_step.iterations[:2] == sparse.iterations[:2]
    torch.testing.assert_close(every_step.val_history[:, :2], sparse.val_history[:, :2], rtol=0, atol=0,
                               equal_nan=True)
    # Its L2 term overflows first (float64): caught at the next measured step at the latest.
    first_bad = every_step.iterations[2] - 1
    assert first_bad <= sparse.iterations[2] - 1 <= -(-first_bad // 7) * 7
    assert not torch.isfinite(torch.tensor(sparse.diverged_loss[2]))
    for k in range(2):
        full, part = every_step.trial_loss_history(k), sparse.trial_loss_history(k)
        steps = set(range(0, len(full), 7)) | {24, 32, 49, len(full) - 1}  # and before each check point
        steps = {t for t in steps if t < len(full)}
        for t in range(len(full)):
            if t in steps:
                assert part[t] == full[t], (k, t)
            else:
                assert torch.isnan(part[t]), (k, t)


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


def test_val_predictions_are_each_trials_final_ones():
    """Kept from each trial's last check point (pruned, diverged or done), no second pass needed."""
    X, y = blobs(N=240, D=12, C=5)
    X_val, y_val = X[:80] * 100, y[:80]
    res = lm.train_linear_classifiers_batched(
        "softmax", X * 100, y, [1e-3, 1e30, 1e-3, 1e-2], [1e-3, 1e3, 0.0, 0.0], [60, 60, 60, 40], 16,
        seed=0, X_val=X_val, y_val=y_val, eval_every=20, callback=lambda p: [2] if p.step == 20 else None)
    assert res.status == ["completed", "diverged", "pruned", "completed"]
    assert res.val_predictions.shape == (4, 80) and res.val_predictions.dtype == torch.long
    assert (res.val_predictions[1] == -1).all()
    for k in (0, 2, 3):
        expected = lm.batched_predict(res.W[k].unsqueeze(1), X_val)[:, 0]
        assert torch.equal(res.val_predictions[k], expected)
        last = res.val_steps.index(res.iterations[k])
        assert res.val_history[last, k].item() == (expected == y_val).double().mean().item()


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
    # Scoring in bf16 too (what the sweep does with model.score_in_matmul_dtype=true).
    low_scored = lm.batched_accuracy(low.W.permute(1, 0, 2), X, y, matmul_dtype=torch.bfloat16)[0].item()
    assert abs(low_scored - acc[1]) < 0.01


def test_validation_scores_the_returned_weights_in_their_own_dtype_unless_told_otherwise():
    """With bf16 products the weights stay float32: by default each check point's accuracy is
    theirs in float32 (what a saved classifier predicts); score_dtype=bf16 scores as the step multiplies."""
    X_all, y_all = blobs(N=3400, D=30, C=5, dtype=torch.float32)
    X_all[:, :-1] += 8 * torch.randn(3400, 30, generator=torch.Generator().manual_seed(3))  # overlapping classes
    X, y, Xv, yv = X_all[:400], y_all[:400], X_all[400:], y_all[400:]
    args = ("softmax", X, y, [1e-2, 3e-2, 1e-1], [1e-4] * 3, 100, 64)
    kw = dict(X_val=Xv, y_val=yv, eval_every=50, seed=0, matmul_dtype=torch.bfloat16)
    own = lm.train_linear_classifiers_batched(*args, **kw)
    low = lm.train_linear_classifiers_batched(*args, **kw, score_dtype=torch.bfloat16)
    assert torch.equal(own.W, low.W)  # the same training either way
    W = own.W.permute(1, 0, 2)
    exact = lm.batched_accuracy(W, Xv, yv).tolist()
    rounded = lm.batched_accuracy(W, Xv, yv, matmul_dtype=torch.bfloat16).tolist()
    assert exact != rounded  # the data has near-ties that bf16 scores flip
    assert own.val_history[-1].tolist() == exact
    assert low.val_history[-1].tolist() == rounded
    assert torch.equal(own.val_predictions[0], lm.batched_predict(W[:, :1], Xv)[:, 0])


def test_bf16_rows_kept_by_the_caller_train_the_same_trials():
    X, y = blobs(N=400, D=30, C=5, dtype=torch.float32)
    args = (["svm", "softmax"], X, y, [1e-2, 3e-2], [1e-4, 1e-3], 60, 32)
    own = lm.train_linear_classifiers_batched(*args, seed=0, matmul_dtype=torch.bfloat16)
    kept = lm.train_linear_classifiers_batched(*args, seed=0, matmul_dtype=torch.bfloat16, X_rows=X.to(torch.bfloat16))
    assert torch.equal(own.W, kept.W) and torch.equal(own.loss_history, kept.loss_history)
    with pytest.raises(ValueError, match=r"X_rows must be X \(400, 31\) in matmul_dtype torch.bfloat16 .* got \(400, 31\) torch.float32"):
        lm.train_linear_classifiers_batched(*args, seed=0, matmul_dtype=torch.bfloat16, X_rows=X)


def test_batched_predict_and_accuracy_match_per_trial_scores():
    X, y = blobs(N=300, D=12, C=5)
    W = torch.randn(X.shape[1], 3, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(0))
    pred = lm.batched_predict(W, X, chunk=128)  # several chunks, the last one short
    assert pred.shape == (300, 3) and pred.dtype == torch.long
    for k in range(3):
        assert torch.equal(pred[:, k], lm.predict_linear_classifier(W[:, k, :], X))
    acc = lm.batched_accuracy(W, X, y, chunk=128)
    assert torch.allclose(acc, (pred == y[:, None]).double().mean(dim=0))
    assert lm.batched_predict(W, X[:0]).shape == (0, 3)
    # bf16 scoring: the argmax of the bf16 scores, whether X comes converted or not
    bf16 = torch.bfloat16
    expected = (X.to(bf16) @ W.reshape(X.shape[1], 15).to(bf16)).float().view(-1, 3, 5).argmax(dim=2)
    for X_in in (X, X.to(bf16)):
        assert torch.equal(lm.batched_predict(W, X_in, chunk=128, matmul_dtype=bf16), expected)
        assert torch.allclose(lm.batched_accuracy(W, X_in, y, chunk=128, matmul_dtype=bf16),
                              (expected == y[:, None]).double().mean(dim=0))


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
