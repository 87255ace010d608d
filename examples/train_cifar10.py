"""Train the assignment's SVM and softmax classifiers on CIFAR-10 and write their templates.

    python examples/train_cifar10.py ../shared/datasets/cifar10-jpeg.tar.gz [--out templates/]

The dataset argument is an image tree (folder or .tar.gz: ROOT/train/<class>/*, ROOT/test/<class>/*)
or the official CIFAR-10 python archive / cifar-10-batches-py folder. Preprocessing as in the
assignment: /255, per-channel mean subtracted, bias column, 40,000 / 10,000 train / val split.
"""
import argparse
import time
from pathlib import Path

import torch

import linear_models as lm
from linear_models.data import load_cifar10, load_image_folder, preprocess

SETTINGS = {  # the assignment's hand-picked values
    "svm": dict(learning_rate=1e-2, reg=1e-5),
    "softmax": dict(learning_rate=1e-1, reg=1e-5),
}


def load(path: str):
    p = Path(path)
    if "cifar-10-python" in p.name or (p / "cifar-10-batches-py").exists() or p.name == "cifar-10-batches-py":
        return load_cifar10(p)
    return load_image_folder(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="image tree (.tar.gz or folder) or the official CIFAR-10 python archive")
    parser.add_argument("--out", default="templates", help="folder for the template grids")
    parser.add_argument("--num-iters", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    data = preprocess(load(args.dataset), validation_ratio=0.2, dtype=torch.float32, device=args.device)
    print(f"train {tuple(data['X_train'].shape)}  val {tuple(data['X_val'].shape)}  test {tuple(data['X_test'].shape)}")
    for name, cls in (("svm", lm.LinearSVM), ("softmax", lm.Softmax)):
        model = cls()
        start = time.perf_counter()
        model.train(data["X_train"], data["y_train"], num_iters=args.num_iters, batch_size=args.batch_size,
                    seed=args.seed, **SETTINGS[name])
        seconds = time.perf_counter() - start
        val = lm.accuracy(model.predict(data["X_val"]), data["y_val"])
        test = lm.accuracy(model.predict(data["X_test"]), data["y_test"])
        path = lm.save_template_grid(model.W, data["image_shape"], Path(args.out) / f"{name}_templates.png",
                                     data["class_names"], title=f"{name}: val {val:.3f} test {test:.3f}")
        print(f"{name:8s} lr={SETTINGS[name]['learning_rate']:g} reg={SETTINGS[name]['reg']:g}: "
              f"val {val:.4f}  test {test:.4f}  ({seconds:.1f}s)  templates -> {path}")


if __name__ == "__main__":
    main()
