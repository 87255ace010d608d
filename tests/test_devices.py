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
