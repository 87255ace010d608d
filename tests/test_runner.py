"""The trial runner: grouping into stacked models, devices, and independence from batch mates."""
import pytest
import torch
import linear_models as lm
from hydra import compose, initialize_config_dir

from imagegen import make_image_tree
from sweeps.app import config_dir
from sweeps.config import register_configs
from sweeps.runner import COMPLETED, TrialSpec, group_key, run_trials

register_configs()


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    root = make_image_tree(tmp_path_factory.mktemp("img") / "tree", train_per_class=30, test_per_class=8, noise=160.0)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=["dataset=image_folder", f"dataset.root={root}", "device=cpu",
                                             "model.num_iters=40", "model.batch_size=16", "eval_every=20",
                                             "model.dtype=float64", "dataset.cache_dir=false"])


def spec(cfg, number, **model):
    cfg = cfg.copy()
    for k, v in model.items():
        cfg.model[k] = v
    return TrialSpec(cfg=cfg, number=number)


def test_group_key_ignores_only_batchable_keys(base_cfg):
    a = spec(base_cfg, 0, learning_rate=0.1, reg=0.1, num_iters=10, lr_decay="cosine").cfg
    b = spec(base_cfg, 1, learning_rate=0.2, reg=0.0).cfg
    c = spec(base_cfg, 2, batch_size=32).cfg
    assert group_key(a) == group_key(b) != group_key(c)
    other_loss = a.copy()
    other_loss.loss.name = "softmax"  # SVM and softmax trials share one stack's matmuls
    assert group_key(other_loss) == group_key(a)
    # Keys compare configs unresolved: a change behind an interpolation still splits the batch.
    d = spec(base_cfg, 3, learning_rate=0.3).cfg
    d.data_dir, d.dataset.root = "/elsewhere", "${data_dir}/cifar10"
    e = d.copy()
    e.data_dir = "/other"
    assert group_key(d) != group_key(e) and group_key(d) != group_key(a)


def test_results_do_not_depend_on_batch_mates_or_the_device_argument(base_cfg):
    specs = [spec(base_cfg, i, learning_rate=lr, reg=reg) for i, (lr, reg) in
             enumerate([(1e-3, 1e-4), (1e-2, 1e-3), (1e-1, 1e-2), (3e-2, 0.0)])]
    softmax = base_cfg.copy()
    softmax.loss.name = "softmax"
    specs.append(TrialSpec(cfg=softmax, number=4))
    together = run_trials(specs, None)
    alone = [run_trials([s], None)[0] for s in specs]
    explicit = run_trials(specs, None, device=torch.device("cpu"))  # as each config's device.type says
    for t, a, d in zip(together, alone, explicit):
        assert t.status == a.status == d.status == COMPLETED
        assert t.val_acc == pytest.approx(a.val_acc, abs=1e-12) == pytest.approx(d.val_acc, abs=1e-12)
        assert torch.allclose(t.weights, a.weights, rtol=1e-10, atol=1e-14)
        assert torch.allclose(t.weights, d.weights, rtol=1e-10, atol=1e-14)
        assert set(t.val_history) == {20, 40}
    assert [o.number for o in together] == [0, 1, 2, 3, 4]


def test_broken_group_fails_its_trials_only(base_cfg):
    bad = base_cfg.copy()
    bad.dataset.root = "/nonexistent/images"
    out = run_trials([spec(base_cfg, 0), TrialSpec(cfg=bad, number=1)], None)
    assert out[0].status == COMPLETED
    assert out[1].status == "error" and "nonexistent" in out[1].message


@pytest.fixture(scope="module")
def near_tie_cfg(tmp_path_factory):
    """Ten overlapping classes in float32: bf16 scores flip some of their near-ties."""
    root = make_image_tree(tmp_path_factory.mktemp("ties") / "tree", classes=tuple("abcdefghij"),
                           train_per_class=60, test_per_class=20, noise=250.0)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=["dataset=image_folder", f"dataset.root={root}", "device=cpu",
                                             "model.num_iters=40", "model.batch_size=16", "eval_every=20",
                                             "model.learning_rate=3e-6", "model.matmul_dtype=bfloat16",
                                             "tracking.test_eval=all", "dataset.cache_dir=false"])


@pytest.mark.parametrize("in_matmul_dtype", [False, True])
def test_accuracies_are_the_recorded_weights_own_unless_scored_in_the_matmul_dtype(near_tie_cfg, in_matmul_dtype):
    """bf16 products: val/train/test accuracies are those of the trial's float32 weights (what
    weights.pt predicts), or with score_in_matmul_dtype those of bf16 scores."""
    from sweeps.data import load_features

    cfg = near_tie_cfg.copy()
    cfg.model.score_in_matmul_dtype = in_matmul_dtype
    (out,) = run_trials([TrialSpec(cfg=cfg, number=0)], None)
    data = load_features(cfg, torch.device("cpu"))
    W = out.weights.unsqueeze(1)  # (D, 1, C)
    accuracy = {dtype: {split: lm.batched_accuracy(W, data[f"X_{split}"], data[f"y_{split}"], matmul_dtype=dtype)[0].item()
                        for split in ("val", "train", "test")} for dtype in (None, torch.bfloat16)}
    assert accuracy[None] != accuracy[torch.bfloat16]  # the two scorings differ on this data
    expected = accuracy[torch.bfloat16 if in_matmul_dtype else None]
    assert {"val": out.val_acc, "train": out.train_acc, "test": out.test_acc} == pytest.approx(expected, abs=1e-12)
    assert out.val_history[cfg.model.num_iters] == out.val_acc
