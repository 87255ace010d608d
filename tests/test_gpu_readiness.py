"""GPU readiness, checked on the CPU with numbers and on each CUDA device where there is one
(benchmarks/gpu_check.sh runs this file on a GPU machine): one concrete device per launch and
one data copy per GPU."""
import pytest
import torch
from omegaconf import OmegaConf

from sweeps import data

CUDA = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here")


def test_cuda_is_made_concrete_for_the_data_cache():
    """'cuda' and 'cuda:0' name one GPU: one cache key, so the data is not loaded twice."""
    assert data.concrete_device("cuda", current_index=0) == torch.device("cuda", 0)
    assert data.concrete_device("cuda:1") == torch.device("cuda", 1)  # an index given is kept
    assert data.concrete_device("cpu") == torch.device("cpu")
    ds = OmegaConf.create({"name": "cifar10", "root": "/data", "download": False})
    assert data.data_cache_key(ds, "float32", "cuda", current_index=0) == data.data_cache_key(ds, "float32", "cuda:0")
    assert data.data_cache_key(ds, "float32", "cuda", current_index=1) != data.data_cache_key(ds, "float32", "cuda:0")
    assert data.resolve_device("cpu") == torch.device("cpu")


@needs_cuda
def test_resolve_device_gives_the_current_gpu_with_its_index():
    for kind in ("cuda", "auto"):
        device = data.resolve_device(kind)
        assert device.type == "cuda" and device.index == torch.cuda.current_device()


@needs_cuda
def test_the_data_is_loaded_once_per_gpu(tmp_path):
    from imagegen import make_image_tree

    root = make_image_tree(tmp_path / "tree", train_per_class=10, test_per_class=4)
    ds = OmegaConf.create({"name": "image_folder", "root": str(root), "download": False, "validation_ratio": 0.2,
                           "subtract_mean": True, "bias_trick": True, "num_train": None, "num_val": None,
                           "num_test": None, "split_seed": 0, "cache_dir": "false"})
    index = torch.cuda.current_device()
    first = data.load_data(ds, "float32", torch.device("cuda"))
    assert data.load_data(ds, "float32", torch.device("cuda", index)) is first
    assert first["X_train"].device == torch.device("cuda", index)


def _model(**kw):
    return OmegaConf.create({"matmul_dtype": "auto", "dtype": "float32", **kw})


def _cuda_fp32_precision() -> str:
    return torch.backends.cuda.matmul.fp32_precision


def test_auto_is_tf32_on_cuda_and_recorded_as_such():
    cuda = torch.device("cuda", 0)  # a device name: no GPU needed to resolve the setting
    assert data.matmul_dtype(_model(), cuda) is None  # float32 tensors: no conversion kernels
    assert data.matmul_dtype_name(_model(), cuda) == "tf32"
    assert data.matmul_dtype_name(_model(dtype="float64"), cuda) is None  # float64 stays exact
    assert data.matmul_dtype_name(_model(matmul_dtype=None), cuda) is None
    assert data.matmul_dtype_name(_model(matmul_dtype="bfloat16"), cuda) == "bfloat16"
    assert not data.uses_tf32(_model(), torch.device("cpu"))


@pytest.mark.parametrize("model,inside", [(_model(), "tf32"), (_model(matmul_dtype=None), "ieee"),
                                          (_model(dtype="float64"), "ieee")])
def test_matmul_precision_sets_cuda_tf32_and_restores_it(model, inside):
    """torch's flag is settable without a GPU; the CPU leaves it alone."""
    before = _cuda_fp32_precision()
    with data.matmul_precision(model, torch.device("cuda", 0)):
        assert _cuda_fp32_precision() == inside
    assert _cuda_fp32_precision() == before
    with data.matmul_precision(model, torch.device("cpu")):
        assert _cuda_fp32_precision() == before


@pytest.mark.parametrize("device", ["cpu"] + CUDA)
@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_a_step_on_bf16_rows_equals_converting_them_in_the_step(device, optimizer):
    """The trainer gathers minibatches from a bf16 copy of X: the step gives the same update as
    converting a float32 batch itself."""
    from linear_models.optimizers import momentum_step_
    from linear_models.sgd_step import _sgd_step_

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 13, generator=g).to(device), torch.randint(5, (64,), generator=g).to(device)
    W0 = 1e-2 * torch.randn(13, 3, 5, generator=g).to(device)
    reg, lr = torch.full((3,), 1e-3, device=device), torch.full((3,), 1e-2, device=device)
    runs = []
    for rows in (X, X.bfloat16()):
        W, alive = W0.clone(), torch.ones(3, dtype=torch.bool, device=device)
        if optimizer == "sgd":
            loss = _sgd_step_("svm", W, rows, y, reg, lr, alive, matmul_dtype=torch.bfloat16)
        else:
            loss = momentum_step_("svm", W, torch.zeros_like(W), rows, y, reg, lr, torch.full((3,), 0.9, device=device),
                                  False, alive, matmul_dtype=torch.bfloat16)
        runs.append((W, loss))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_the_bf16_training_split_is_converted_once_per_launch():
    X = torch.randn(40, 7)
    splits = {"X_train": X}
    rows = data.matmul_rows(splits, torch.bfloat16)
    assert rows.dtype == torch.bfloat16 and torch.equal(rows, X.bfloat16())
    assert data.matmul_rows(splits, torch.bfloat16) is rows  # kept with the cached splits
    assert data.matmul_rows(splits, None) is X and data.matmul_rows(splits, torch.float32) is X


@needs_cuda
def test_tf32_training_stays_close_to_full_float32():
    import linear_models as lm
    from test_train import blobs

    X, y = (t.to(CUDA[0]) for t in blobs(N=400, D=24, C=5))
    X = X.float()
    runs = []
    for model in (_model(matmul_dtype=None), _model()):
        with data.matmul_precision(model, X.device):
            runs.append(lm.train_linear_classifiers_batched("svm", X, y, [1e-2], [1e-4], [100], 64, seed=1).W)
    assert ((runs[1] - runs[0]).norm() / runs[0].norm()).item() < 0.02


def test_cuda_auto_batch_sizes_the_stack_from_free_memory():
    from sweeps.engine.options import CUDA_MAX_AUTO_BATCH, cuda_auto_batch

    # CIFAR-10 (D = 3073, C = 10), B = 200, 1500 iterations, float32, plain SGD: per trial
    # 4 * 30730 + 4 * 2000 + 2 * 81920 + 6000 = 300,760 elements = 1,203,040 bytes.
    per_trial = 1_203_040
    assert cuda_auto_batch(100 * per_trial, 3073, 10, 200, "sgd") == 50  # half the free memory
    assert cuda_auto_batch(100 * per_trial + 2 * per_trial - 1, 3073, 10, 200, "sgd") == 50
    assert cuda_auto_batch(139 * 2 ** 30, 3073, 10, 200, "sgd") == CUDA_MAX_AUTO_BATCH  # an H200: capped
    assert cuda_auto_batch(0, 3073, 10, 200, "sgd") == 1  # never below one trial
    momentum = cuda_auto_batch(100 * per_trial, 3073, 10, 200, "momentum")
    asgd = cuda_auto_batch(100 * per_trial, 3073, 10, 200, "asgd")
    assert momentum < asgd < 50  # velocity + gradient buffer, or the averaged weights
    assert cuda_auto_batch(100 * per_trial, 3073, 10, 200, "sgd", element_size=8) == 25  # float64
    assert cuda_auto_batch(8 * 2 ** 30, 150_529, 100, 256, "sgd") == 17  # 224x224 images, 100 classes, 8 GiB free


def test_the_auto_round_size_on_cuda():
    from sweeps.engine.options import CUDA_AUTO_BATCH, SweeperOptions

    random, tpe = SweeperOptions(sampler="random"), SweeperOptions(sampler="tpe")
    assert random.batch_size_for("cuda", 5000, cuda_fit=700) == 700
    assert random.batch_size_for("cuda", 100, cuda_fit=700) == 100
    assert random.batch_size_for("cuda", 5000) == CUDA_AUTO_BATCH  # no memory reading given
    assert random.batch_size_for("cpu", 5000, cuda_fit=700) == 64
    assert tpe.batch_size_for("cuda", 100, cuda_fit=700) == 25  # learns from tells: about four rounds
    assert SweeperOptions(sampler="random", batch_size=3).batch_size_for("cuda", 100, cuda_fit=700) == 3


@pytest.mark.parametrize("preprocess,swept,expected", [
    ("mean", [], torch.bfloat16),
    ("mean", ["model.matmul_dtype"], None),  # each study converts its own
    ("mean", ["preprocess"], None),
    ("zca", [], None),  # the stacks train on the whitened split, not the prefetched one
])
def test_the_prefetch_makes_the_bf16_split_only_when_every_stack_trains_on_it(preprocess, swept, expected):
    config = OmegaConf.create({"preprocess": {"name": preprocess},
                               "model": {"matmul_dtype": "bfloat16", "dtype": "float32"}})
    assert data._prefetched_rows_dtype(config, torch.device("cpu"), swept) == expected
