"""Small, learnable image trees for tests: ROOT/{train,test}/<class>/NNNN.png."""
from pathlib import Path

import numpy as np
from PIL import Image


def make_image_tree(root, classes=("cat", "dog", "frog"), train_per_class=40, test_per_class=10,
                    size=8, mode="RGB", seed=0, noise=40.0) -> Path:
    """Each class has its own mean colour pattern plus noise, so a linear model can learn it."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    channels = 3 if mode == "RGB" else 1
    patterns = rng.uniform(40, 215, size=(len(classes), size, size, channels))
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(patterns[c] + rng.normal(0, noise, size=patterns[c].shape), 0, 255).astype(np.uint8)
                Image.fromarray(img[..., 0] if channels == 1 else img, mode).save(folder / f"{i:04d}.png")
    return root
