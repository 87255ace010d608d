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
