"""Training, prediction, classifiers, templates and argument validation."""
import numpy as np
import pytest
import torch
from PIL import Image

import linear_models as lm


def blobs(N=300, D=20, C=4, seed=0, dtype=torch.float64):
    """Linearly separable-ish Gaussian blobs with a bias column: X (N, D+1), y (N,)."""
    g = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(C, D, generator=g, dtype=dtype)
    y = torch.randint(C, (N,), generator=g)
    X = centers[y] + torch.randn(N, D, generator=g, dtype=dtype)
    return torch.cat([X, torch.ones(N, 1, dtype=dtype)], dim=1), y


@pytest.mark.parametrize("loss_func", [lm.svm_loss_vectorized, lm.softmax_loss_vectorized])
def test_training_lowers_loss_and_is_reproducible(loss_func):
    X, y = blobs()
    W1, hist1 = lm.train_linear_classifier(loss_func, None, X, y, 1e-2, 1e-4, num_iters=200, batch_size=50, seed=3)
    W2, hist2 = lm.train_linear_classifier(loss_func, None, X, y, 1e-2, 1e-4, num_iters=200, batch_size=50, seed=3)
    W3, _ = lm.train_linear_classifier(loss_func, None, X, y, 1e-2, 1e-4, num_iters=200, batch_size=50, seed=4)
    assert hist1[-20:].mean() < 0.5 * hist1[:5].mean()
    assert torch.equal(W1, W2) and torch.equal(hist1, hist2)
    assert not torch.equal(W1, W3)
    acc = lm.accuracy(lm.predict_linear_classifier(W1, X), y)
    assert acc > 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_preserves_dtype_and_device(dtype):
    X, y = blobs(dtype=dtype)
    W, hist = lm.train_linear_classifier(lm.softmax_loss_vectorized, None, X, y, num_iters=5, seed=0)
    assert W.dtype == dtype and hist.dtype == dtype and W.device == X.device
    assert W.shape == (X.shape[1], 4)


def test_initial_weights_are_tiny():
    X, y = blobs()
    W, hist = lm.train_linear_classifier(lm.svm_loss_vectorized, None, X, y, 1e-30, 0.0, num_iters=1, seed=0)
    assert W.abs().max() < 1e-5
    assert hist[0].item() == pytest.approx(3.0, rel=1e-3)  # C - 1 with 4 classes


def test_divergence_stops_with_clear_error():
    X, y = blobs()
    calls = []
    with pytest.raises(lm.TrainingDivergedError, match=r"training diverged: loss is (nan|inf) at iteration \d+ \(learning_rate=1e\+30"):
        lm.train_linear_classifier(lm.svm_loss_vectorized, None, X * 1e3, y, 1e30, 1e5, num_iters=100,
                                   seed=0, callback=lambda *a: calls.append(a), callback_every=50)
    assert not calls  # stopped long before the first callback


def test_callback_sees_progress_and_can_stop():
    X, y = blobs()
    seen = []

    def callback(it, W, history):
        seen.append((it, len(history)))
        return it >= 40

    _, hist = lm.train_linear_classifier(lm.softmax_loss_vectorized, None, X, y, num_iters=100, seed=0,
                                         callback=callback, callback_every=20)
    assert seen == [(20, 20), (40, 40)]
    assert len(hist) == 40


@pytest.mark.parametrize("schedule,checks", [
    ("none", lambda f: torch.all(f == 1)),
    ("step", lambda f: f[0] == 1 and f[-1] == 0.25 and f[33] == 1 and f[34] == 0.5),
    ("cosine", lambda f: f[0] == 1 and f[-1] < 1e-3 and torch.all(f[1:] <= f[:-1])),
])
def test_lr_schedules(schedule, checks):
    assert checks(lm.lr_schedule_factors(schedule, 100))


@pytest.mark.parametrize("kwargs,message", [
    (dict(learning_rate=-0.1), r"learning_rate must be > 0, got -0.1"),
    (dict(learning_rate=float("nan")), r"learning_rate must be > 0, got nan"),
    (dict(reg=-1.0), r"reg must be >= 0, got -1.0"),
    (dict(num_iters=0), r"num_iters must be an integer >= 1, got 0"),
    (dict(batch_size=2.5), r"batch_size must be an integer >= 1, got 2.5"),
    (dict(lr_schedule="linear"), r"lr_schedule must be one of \['cosine', 'none', 'step'\], got 'linear'"),
])
def test_bad_arguments_are_named(kwargs, message):
    X, y = blobs()
    with pytest.raises(ValueError, match=message):
        lm.train_linear_classifier(lm.svm_loss_vectorized, None, X, y, **{"num_iters": 3, **kwargs})


def test_shape_mismatch_mentions_bias_column():
    X, y = blobs()
    W = torch.zeros(X.shape[1], 4, dtype=X.dtype)
    with pytest.raises(ValueError, match=r"X has 20 features but W expects 21: is the bias column missing\?"):
        lm.predict_linear_classifier(W, X[:, :-1])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\] for W with 4 classes, got 7"):
        lm.train_linear_classifier(lm.svm_loss_vectorized, W, X, torch.full_like(y, 7), num_iters=1)


@pytest.mark.parametrize("cls", [lm.LinearSVM, lm.Softmax])
def test_classifier_train_predict_save_load(cls, tmp_path):
    X, y = blobs(dtype=torch.float32)
    model = cls()
    hist = model.train(X, y, learning_rate=1e-2, reg=1e-4, num_iters=150, batch_size=64, seed=0)
    assert hist[-1] < hist[0]
    path = tmp_path / "model.pt"
    model.save(path)
    again = lm.load_classifier(path)
    assert type(again) is cls
    assert torch.equal(again.predict(X), model.predict(X))
    loss, dW = again.loss(X[:10], y[:10], 0.0)
    assert dW.shape == model.W.shape
    # A trial's weights cut from a stack of K are saved alone, not with the whole stack.
    stack = torch.randn(50, *model.W.shape)
    cls(stack[3]).save(path)
    assert path.stat().st_size < 2 * model.W.numel() * 4 + 4096
    assert torch.equal(lm.load_classifier(path).W, stack[3])


def test_load_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"W": Evil()}, path)
    with pytest.raises(Exception):
        lm.LinearSVM().load(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("image_shape", [(8, 6, 3), (5, 5, 1)])
def test_class_templates_and_grid(image_shape, tmp_path):
    H, Wd, ch = image_shape
    W = torch.randn(H * Wd * ch + 1, 3, generator=torch.Generator().manual_seed(0))
    tiles = lm.class_templates(W, image_shape)
    assert tiles.shape == (3, H, Wd, ch) and tiles.dtype == np.uint8
    assert tiles.reshape(3, -1).min(1).tolist() == [0, 0, 0]
    assert tiles.reshape(3, -1).max(1).tolist() == [255, 255, 255]
    # Tile c is column c without the bias row, in (H, W, ch) order.
    # (Compared at torch's extremes: two weights close to the max may both round to 255.)
    col = W[:-1, 1].reshape(H, Wd, ch)
    assert tiles[1].reshape(-1)[int(torch.argmax(col))] == 255
    assert tiles[1].reshape(-1)[int(torch.argmin(col))] == 0
    path = lm.save_template_grid(W, image_shape, tmp_path / "grid.png", ["cat", "dog", "frog"], title="t")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 3 * Wd * 4
        drawn = lm.template_grid(W, image_shape, ["cat", "dog", "frog"], title="t")
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(drawn))  # lossless, as drawn
    with pytest.raises(ValueError, match="class_names has 2 names but W has 3 classes"):
        lm.template_grid(W, image_shape, ["a", "b"])
    with pytest.raises(ValueError, match=r"W has \d+ rows but image_shape"):
        lm.class_templates(W[:-2], image_shape)


def test_png_writer_round_trips_through_pillow(tmp_path):
    from linear_models.png import encode_png, write_png

    rgb = np.random.default_rng(0).integers(0, 256, size=(7, 13, 3), dtype=np.uint8)
    with Image.open(write_png(tmp_path / "x.png", rgb)) as img:
        img.load()  # decodes every row and checks the chunks' CRCs
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (13, 7))
        assert np.array_equal(np.asarray(img), rgb)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encode_png(rgb[..., :2])
