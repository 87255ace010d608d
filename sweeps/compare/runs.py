"""Loading a run back: its config.yaml, weights.pt and dataset; test accuracy from the weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


class RunUnavailable(Exception):
    """A run's config, weights or dataset could not be loaded (the report says why)."""


@dataclass
class Evaluation:
    test_acc: float
    per_class: np.ndarray  # (C,) test accuracy per class
    class_names: List[str]
    image_shape: Tuple[int, int, int]
    W: Any  # torch.Tensor (D, C) on the CPU


class RunLoader:
    """Downloads and caches trial artifacts; evaluates saved weights on the run's dataset."""

    def __init__(self, client, workdir: Path, data_root: Optional[str] = None, device: Optional[str] = None):
        self.client, self.workdir = client, Path(workdir)
        self.data_root, self.device = data_root, device
        self._evals: Dict[str, Evaluation] = {}

    def artifact(self, run_id: str, path: str) -> Path:
        dst = self.workdir / run_id
        if (dst / path).is_file():
            return dst / path
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception as e:
            raise RunUnavailable(f"run {run_id} has no usable {path} artifact ({type(e).__name__}: {e})") from None

    def config(self, run_id: str):
        """The run's config.yaml (with --data-root applied)."""
        from omegaconf import OmegaConf

        path = self.artifact(run_id, "config.yaml")
        try:
            cfg = OmegaConf.load(path)
        except Exception as e:
            raise RunUnavailable(f"run {run_id}: config.yaml cannot be read ({e})") from None
        from ..config import with_schema_defaults

        cfg = with_schema_defaults(cfg)  # a run from before a config group existed gets its default
        if self.data_root is not None:
            cfg.dataset.root = self.data_root
        return cfg

    def eval_device(self, cfg):
        import torch

        from ..data import resolve_device

        kind = self.device or cfg.device.type
        if kind == "cuda" and not torch.cuda.is_available():
            kind = "cpu"  # evaluation is cheap: the CPU will do
        return resolve_device(kind)

    def evaluate(self, run_id: str) -> Evaluation:
        """Test accuracy (overall and per class) of the run's weights.pt on its dataset."""
        if run_id in self._evals:
            return self._evals[run_id]
        import linear_models as lm

        from ..data import load_features

        cfg = self.config(run_id)
        try:
            W = lm.load_classifier(self.artifact(run_id, "weights.pt")).W
        except (ValueError, RuntimeError, OSError) as e:
            raise RunUnavailable(f"run {run_id}: weights.pt cannot be read ({e})") from None
        device = self.eval_device(cfg)
        try:
            data = load_features(cfg, device)
        except Exception as e:
            raise RunUnavailable(f"the dataset of run {run_id} (dataset.root={cfg.dataset.get('root')!r}) could not "
                                 f"be loaded: {type(e).__name__}: {e}; pass --data-root PATH") from None
        X, y = data["X_test"], data["y_test"]
        if X.shape[1] != W.shape[0]:
            raise RunUnavailable(f"run {run_id}: weights have {W.shape[0]} rows but the dataset has {X.shape[1]} "
                                 "features: is --data-root the dataset the run was trained on?")
        pred = lm.predict_linear_classifier(W.to(device, X.dtype), X)
        C = len(data["class_names"])
        y_np, correct = y.cpu().numpy(), (pred == y).cpu().numpy()
        per_class = np.array([correct[y_np == c].mean() if (y_np == c).any() else np.nan for c in range(C)])
        ev = Evaluation(float(correct.mean()) if len(correct) else float("nan"), per_class,
                        list(data["class_names"]), tuple(data["image_shape"]), data["transform"].pixel_weights(W))
        self._evals[run_id] = ev
        return ev
