"""Figures of the report, each written as a PNG: accuracy maps, best so far, loss curves, class
templates, per-class accuracy, reseeds."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .fmt import acc, finite, sci
from .runs import RunLoader, RunUnavailable
from .stats import mean_ci
from .summary import FamilySummary, ranked


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_accuracy_maps(df: pd.DataFrame, labels: pd.Series, families: Sequence[str], path: Path) -> Path:
    """Val accuracy over log lr x log reg, one panel per family, one colour scale for all."""
    from types import SimpleNamespace

    from optuna.trial import TrialState

    from ..study_report import LR_KEY, REG_KEY, accuracy_map

    plt = _plt()
    done = ranked(df)
    vals = done["val_acc"].astype(float)
    vmin, vmax = (float(vals.min()), float(vals.max())) if len(vals) else (None, None)
    n = len(families)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n + 1.2, 4.4), squeeze=False, constrained_layout=True)
    sc = None
    for ax, fam in zip(axes[0], families):
        sub = done[labels.loc[done.index] == fam]
        trials = [SimpleNamespace(state=TrialState.COMPLETE, value=float(r["val_acc"]),
                                  params={LR_KEY: float(r["learning_rate"]), REG_KEY: float(r["reg"])})
                  for _, r in sub.iterrows()
                  if "learning_rate" in r and "reg" in r and finite(r["learning_rate"]) and r["learning_rate"] > 0
                  and finite(r["reg"])]
        sc = accuracy_map(ax, trials, f"{fam} ({len(trials)} completed)", vmin=vmin, vmax=vmax) or sc
    if sc is not None:
        fig.colorbar(sc, ax=list(axes[0]), label="val accuracy")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_best_so_far(df: pd.DataFrame, labels: pd.Series, families: Sequence[str], path: Path) -> Path:
    """Best validation accuracy so far against trial number, one line per family."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    for i, fam in enumerate(families):
        sub = df[labels == fam]
        single_study = sub["study"].nunique() <= 1 and sub["trial"].notna().all()
        sub = sub.sort_values(["trial", "start_time"] if single_study else ["start_time"])
        x = sub["trial"].astype(float).to_numpy() if single_study else np.arange(len(sub), dtype=float)
        val = pd.to_numeric(sub["val_acc"], errors="coerce") if "val_acc" in sub.columns else np.nan
        v = np.where(sub["state"] == "COMPLETE", val, np.nan).astype(float)
        best = np.fmax.accumulate(np.where(np.isfinite(v), v, -np.inf))
        best[~np.isfinite(best)] = np.nan
        color = f"C{i}"
        ax.step(x, best, where="post", color=color, label=f"{fam} (best {np.nanmax(v) if np.isfinite(v).any() else float('nan'):.4f})")
        ax.scatter(x, v, color=color, alpha=0.35, s=18)
    multi = any(df.loc[labels == fam, "study"].nunique() > 1 for fam in families)
    ax.set_xlabel("trial number" + (" (in start order where a family spans several studies)" if multi else ""))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("val accuracy (best so far; dots: each trial)")
    ax.set_title("best validation accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_loss_curves(client, summaries: List[FamilySummary], path: Path) -> Path:
    """Training loss (train_loss metric history) of each family's best trial, overlaid."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    positive = True
    for i, s in enumerate(summaries):
        if s.best is None:
            continue
        hist = sorted(client.get_metric_history(s.best["run_id"], "train_loss"), key=lambda m: m.step)
        pts = [(m.step, m.value) for m in hist if math.isfinite(m.value)]
        if not pts:
            continue
        positive &= all(v > 0 for _, v in pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}",
                label=f"{s.family}: lr={sci(s.best.get('learning_rate'))} reg={sci(s.best.get('reg'))}")
    if positive and ax.lines:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (minibatch, incl. regularization)")
    ax.set_title("loss curves of the best trials")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_templates(summaries: List[FamilySummary], loader: RunLoader, path: Path, notes: List[str]) -> Optional[Path]:
    """The best runs' class templates (weights as images, class names below), one block per family.

    Families are stacked top to bottom, not side by side: two 10-class rows side by side are
    ~2,700 px wide and a page shrinks them until the labels cannot be read. Each block is
    redrawn from the weights as 2 rows of C/2 classes when the run's dataset loads (class names,
    image shape), else it is the run's own templates.png artifact (one row of classes).
    """
    blocks = []
    for s in summaries:
        if s.best is None:
            continue
        img = _template_grid(s, loader, notes)
        if img is not None:
            title = [f"{s.family} (best run {s.best['run_id'][:8]})",
                     f"val acc {s.best_val_acc:.4f}, test acc {acc(s.test_acc)}, "
                     f"lr={sci(s.best.get('learning_rate'))}, reg={sci(s.best.get('reg'))}"]
            blocks.append((title, img))
    if not blocks:
        return None
    _stack(blocks).save(path, format="PNG")
    return path


def _template_grid(s: FamilySummary, loader: RunLoader, notes: List[str]):
    """The class-template grid (PIL RGB image) of a family's best run, or None (``notes`` say why)."""
    from PIL import Image

    import linear_models as lm

    try:  # from the weights: a layout chosen here (needs the dataset for the class names and image shape)
        ev = loader.evaluate(s.best["run_id"])
    except RunUnavailable as e:
        try:
            img = Image.open(loader.artifact(s.best["run_id"], "templates.png")).convert("RGB")
        except RunUnavailable as e2:
            notes.append(f"class templates of {s.family}: {e}; {e2}")
            return None
        k = -(-360 // img.width)  # tiny images (tests, MNIST-sized data): enlarge, pixels kept sharp
        return img.resize((img.width * k, img.height * k), Image.NEAREST) if k > 1 else img
    C, side = len(ev.class_names), max(ev.image_shape[:2])
    cols = C if C <= 6 else min(10, -(-C // 2))  # 10 classes: 2 rows of 5
    scale = max(2, round(128 / side))  # tiles of ~128 px: CIFAR's 32 px x4, 8 px test images x16
    return lm.template_grid(ev.W, ev.image_shape, ev.class_names, scale=scale, columns=cols).convert("RGB")


def _stack(blocks: Sequence[Tuple[List[str], "Image.Image"]]):
    """One white canvas: for each (title lines, image), the title then the image, top to bottom."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)  # a scalable font (Pillow >= 10.1 with FreeType)
    except TypeError:
        font = ImageFont.load_default()
    gap, line = 16, 20
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(int(measure.textlength(t, font=font)) for lines, _ in blocks for t in lines)
    width = max(text_w, max(img.width for _, img in blocks)) + 2 * gap
    height = gap + sum(line * len(lines) + 4 + img.height + gap for lines, img in blocks)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = gap
    for lines, img in blocks:
        for i, t in enumerate(lines):
            draw.text((gap, y + i * line), t, fill="black", font=font)
        y += line * len(lines) + 4
        canvas.paste(img, (gap, y))
        y += img.height + gap
    return canvas


def fig_per_class(summaries: List[FamilySummary], loader: RunLoader, path: Path, notes: List[str]) -> Optional[Path]:
    """Per-class test accuracy of the best models, bars side by side per class."""
    evals = []
    for s in summaries:
        if s.best is None:
            continue
        try:
            evals.append((s.family, loader.evaluate(s.best["run_id"])))
        except RunUnavailable as e:
            notes.append(f"per-class accuracy of {s.family}: {e}")
    if not evals:
        return None
    names = evals[0][1].class_names
    evals = [(f, e) for f, e in evals if e.class_names == names]
    plt = _plt()
    C, n = len(names), len(evals)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * C * max(n, 2) / 2 + 2), 4.6), layout="constrained")
    width = 0.8 / n
    for i, (fam, ev) in enumerate(evals):
        xs = np.arange(C) + (i - (n - 1) / 2) * width
        ax.bar(xs, ev.per_class, width=width, color=f"C{i}", label=f"{fam} (test {ev.test_acc:.4f})")
    ax.set_xticks(np.arange(C))
    ax.set_xticklabels(names, rotation=30 if C > 5 else 0, ha="right" if C > 5 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    # The legend sits above the axes, between them and the title (padded up to make room): inside,
    # it hid the bars of the best-classified classes.
    ax.set_title("per-class test accuracy of the best models", pad=22 * -(-n // 4) + 4)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(n, 4), frameon=False)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def fig_reseeds(reseeds: pd.DataFrame, families: Sequence[str], path: Path) -> Path:
    """Each seed's val and test accuracy per family, with the mean and its 95% interval."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("val_acc", "test_acc")):
        for i, fam in enumerate(families):
            v = reseeds.loc[reseeds["family"] == fam, metric].astype(float)
            ci = mean_ci(v)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.12, 0.12, max(len(v), 1))[:len(v)], v, color=f"C{i}",
                       alpha=0.6)
            if ci.n >= 2:
                ax.errorbar([i + 0.3], [ci.mean], yerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="o",
                            color="k", capsize=5)
        ax.set_xticks(range(len(families)))
        ax.set_xticklabels(families)
        ax.set_title(f"{metric} over seeds (black: mean, 95% CI)")
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
