"""The trainer on every device this machine has: the CPU always, each CUDA device where there
is one (benchmarks/gpu_check.sh runs this file on a GPU machine; here the CUDA cases skip).

On each device: batched == separate runs (float64; every optimizer, with flips), a fixed seed
reproduces, bf16 matmuls stay close to float32, transforms fit there, and the runner trains a
stack there. Several GPUs are tested one at a time: a launch trains on one device (one worker
process per GPU, docker/gpu-workers.sh)."""
import pytest
import torch

import linear_models as lm
from test_runner import base_cfg  # noqa: F401 -- the fixture
from test_train import blobs

DEVICES = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
SINGLE = {"svm": lm.svm_loss_vectorized, "softmax": lm.softmax_loss_vectorized}


def on(device, *tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_separate_runs_on_the_device(device):
    X, y = on(device, *blobs(N=200, D=12, C=5))
    losses, lrs, regs, iters = ["svm", "softmax", "svm"], [1e-2, 5e-2, 1e-1], [1e-3, 1e-2, 0.0], [40, 40, 25]
    W0 = 1e-3 * torch.randn(X.shape[1], 3, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(9)).to(device)
    res = lm.train_linear_classifiers_batched(losses, X, y, lrs, regs, iters, 32, W_init=W0,
                                              generator=lm.make_generator(device, 7))
    for k in range(3):
        W_k, _ = lm.train_linear_classifier(SINGLE[losses[k]], W0[:, k, :].clone(), X, y, lrs[k], regs[k], iters[k],
                                            32, generator=lm.make_generator(device, 7))
        assert res.W[k].device.type == torch.device(device).type
        assert ((res.W[k] - W_k).abs().max() / W_k.abs().max()).item() < 1e-10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "asgd"])
def test_optimizers_and_flips_equal_separate_runs_on_the_device(device, optimizer):
    X, y = on(device, *blobs(N=200, D=12, C=5))
    flip = lm.FeatureFlip(lm.pixel_flip_permutation((2, 2, 3)))
    lrs, regs, mus, starts = [1e-2, 5e-2], [1e-3, 0.0], [0.9, 0.5], [0.5, 0.2]
    W0 = 1e-3 * torch.randn(X.shape[1], 2, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(9)).to(device)
    common = dict(optimizer=optimizer, flip=flip)
    res = lm.train_linear_classifiers_batched("softmax", X, y, lrs, regs, 40, 32, W_init=W0, momentum=mus,
                                              average_start=starts, generator=lm.make_generator(device, 7), **common)
    for k in range(2):
        alone = lm.train_linear_classifiers_batched("softmax", X, y, [lrs[k]], [regs[k]], 40, 32,
                                                    W_init=W0[:, k:k + 1].contiguous(), momentum=[mus[k]],
                                                    average_start=[starts[k]],
                                                    generator=lm.make_generator(device, 7), **common)
        assert ((res.W[k] - alone.W[0]).abs().max() / alone.W[0].abs().max()).item() < 1e-10


@pytest.mark.parametrize("device", DEVICES)
def test_transforms_fit_and_commute_with_flips_on_the_device(device):
    from linear_models.data import fit_feature_transform

    X = torch.cat([torch.rand(300, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
                   torch.ones(300, 1, dtype=torch.float64)], dim=1).to(device)
    pixels_flip = lm.FeatureFlip(lm.pixel_flip_permutation((2, 2, 3))).to(device, X.dtype)
    for kind in ("standardize", "zca", "pca"):
        transform = fit_feature_transform(kind, X, (2, 2, 3), epsilon=0.01, components=5, mirror=True)
        flip = transform.flip.to(device, X.dtype)
        assert torch.allclose(transform(pixels_flip(X)), flip(transform(X)), rtol=0, atol=1e-9), kind


@pytest.mark.parametrize("device", DEVICES)
def test_a_seed_reproduces_on_the_device(device):
    X, y = on(device, *blobs(N=200, D=12, C=5))
    runs = [lm.train_linear_classifiers_batched("softmax", X, y, [1e-2, 1e-1], [1e-3, 1e-4], [30, 30], 16,
                                                generator=lm.make_generator(device, 3)).W for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_matmuls_stay_close_to_float32(device):
    X, y = on(device, *blobs(N=400, D=24, C=5))
    X = X.float()
    common = dict(generator=None, X_val=X, y_val=y, eval_every=50)
    exact = lm.train_linear_classifiers_batched("svm", X, y, [1e-2], [1e-4], [100], 64,
                                                **{**common, "generator": lm.make_generator(device, 1)})
    bf16 = lm.train_linear_classifiers_batched("svm", X, y, [1e-2], [1e-4], [100], 64, matmul_dtype=torch.bfloat16,
                                               **{**common, "generator": lm.make_generator(device, 1)})
    assert bf16.W.dtype == torch.float32  # weights stay in float32; only the matmuls are bf16
    rel = ((bf16.W - exact.W).norm() / exact.W.norm()).item()
    assert rel < 0.05, rel


@pytest.mark.parametrize("device", DEVICES)
def test_runner_trains_a_stack_on_the_device(base_cfg, device):
    """The runner's stacked trials on ``device``, all of them there."""
    from sweeps.runner import COMPLETED, run_trials
    from test_runner import spec

    specs = [spec(base_cfg, i, learning_rate=10.0 ** -(i + 1)) for i in range(4)]
    outcomes = run_trials(specs, None, device=torch.device(device))
    assert [o.status for o in outcomes] == [COMPLETED] * 4
    alone = run_trials([spec(base_cfg, 0, learning_rate=0.1)], None, device=torch.device(device))[0]
    assert torch.allclose(outcomes[0].weights, alone.weights, rtol=1e-10, atol=0)  # batch mates don't matter


@pytest.mark.parametrize("device", DEVICES)
def test_a_seed_draws_the_cpu_generators_minibatches_on_every_device(device):
    """make_generator is a CPU generator; the draws are moved to the device, not made there."""
    N, B = 500, 16
    X = torch.arange(N, dtype=torch.float64).view(N, 1).to(device)  # row i holds i
    gen = lm.make_generator(device, 7)
    assert gen.device.type == "cpu"
    ref = torch.Generator().manual_seed(7)
    for _ in range(5):
        X_batch, _ = lm.sample_batch(X, X[:, 0].long(), N, B, gen)
        assert X_batch.device.type == torch.device(device).type
        assert torch.equal(X_batch[:, 0].long().cpu(), torch.randint(N, (B,), generator=ref))


@pytest.mark.parametrize("device", DEVICES)
def test_blocks_of_draws_give_the_per_step_minibatches_and_flips(device, monkeypatch):
    """The batched trainer draws a block of steps at once (here 3 steps a block): the same
    indices and flip coins as the single trainer's one draw per step."""
    from linear_models import batched_state

    monkeypatch.setattr(batched_state, "_DRAW_BLOCK", 3 * 32)
    X, y = on(device, *blobs(N=200, D=12, C=5))
    W0 = 1e-3 * torch.randn(X.shape[1], 1, 5, dtype=X.dtype, generator=torch.Generator().manual_seed(9)).to(device)
    res = lm.train_linear_classifiers_batched("svm", X, y, [1e-2], [1e-3], 40, 32, W_init=W0, eval_every=10,
                                              generator=lm.make_generator(device, 7))
    W_k, _ = lm.train_linear_classifier(SINGLE["svm"], W0[:, 0, :].clone(), X, y, 1e-2, 1e-3, 40, 32,
                                        generator=lm.make_generator(device, 7))
    assert ((res.W[0] - W_k).abs().max() / W_k.abs().max()).item() < 1e-10
    flip = lm.FeatureFlip(lm.pixel_flip_permutation((2, 2, 3)))
    runs = [lm.train_linear_classifiers_batched("softmax", X, y, [1e-2], [1e-3], 40, 32, W_init=W0, flip=flip,
                                                generator=lm.make_generator(device, 7)).W for _ in range(2)]
    monkeypatch.setattr(batched_state, "_DRAW_BLOCK", 1 << 18)  # one block for all 40 steps
    whole = lm.train_linear_classifiers_batched("softmax", X, y, [1e-2], [1e-3], 40, 32, W_init=W0, flip=flip,
                                                generator=lm.make_generator(device, 7)).W
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], whole)


@pytest.mark.parametrize("device", DEVICES[1:] or [pytest.param("cuda", marks=pytest.mark.skip("no CUDA device"))])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "asgd"])
def test_cpu_and_cuda_runs_of_a_seed_agree(device, optimizer):
    """Same seed, float64: the same initial weights, minibatches and flips on both devices."""
    X, y = blobs(N=300, D=12, C=5)
    flip = lm.FeatureFlip(lm.pixel_flip_permutation((2, 2, 3)))
    runs = [lm.train_linear_classifiers_batched(["svm", "softmax"], X.to(d), y.to(d), [1e-2, 5e-2], [1e-3, 1e-4],
                                                [60, 45], 32, X_val=X.to(d), y_val=y.to(d), eval_every=20, seed=11,
                                                optimizer=optimizer, flip=flip) for d in ("cpu", device)]
    assert torch.allclose(runs[0].W, runs[1].W.cpu(), rtol=1e-9, atol=1e-12)
    assert runs[0].status == runs[1].status and torch.equal(runs[0].val_predictions, runs[1].val_predictions.cpu())
