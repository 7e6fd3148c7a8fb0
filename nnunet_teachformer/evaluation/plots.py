"""The report's figures (matplotlib, Agg backend, PNG): accuracy/cost trade-off, per-case Dice, loss curves.

Colours and markers encode the model's role in every figure, so a reader can tell teachers, students
without distillation and distilled students apart at a glance.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nnunet_teachformer.evaluation.results import (ROLE_DISTILLED, ROLE_NNUNET, ROLE_STUDENT,  # noqa: E402
                                                   ROLE_TEACHER, ROLE_UNKNOWN)

ROLE_STYLE = {  # colour, marker
    ROLE_TEACHER: ("tab:blue", "s"),
    ROLE_STUDENT: ("tab:orange", "o"),
    ROLE_DISTILLED: ("tab:red", "*"),
    ROLE_NNUNET: ("tab:green", "D"),
    ROLE_UNKNOWN: ("tab:gray", "x"),
}
LOSS_CURVES = (("train_l_seg", "L_SEG (segmentation)"), ("train_l_afs", "L_AFS (attention maps)"),
               ("train_l_pwd", "L_PWD (pixel-wise KD)"))


def wrap(name: str, width: int = 28) -> str:
    """A model name broken into lines of about ``width`` characters for figure labels, after an underscore
    or at a space."""
    lines = [""]
    for piece in re.findall(r"[^_ ]+_?| ", name):
        if len(lines[-1]) + len(piece.rstrip()) > width and lines[-1].strip():
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.strip() for line in lines)


@dataclass(frozen=True)
class TradeoffPoint:
    name: str
    role: str
    cost: float
    dice: float  # fraction
    dice_sd: float  # over folds; NaN with one fold


def tradeoff_plot(points: Sequence[TradeoffPoint], cost_label: str, title: str, path: Path,
                  not_shown: Sequence[str] = ()) -> Path:
    """Dice (mean +- sd over folds) against a cost (parameters, GFLOPs) on a log axis, one point per model."""
    fig, ax = plt.subplots(figsize=(10, 6))
    for role in ROLE_STYLE:
        mine = [p for p in points if p.role == role]
        if not mine:
            continue
        colour, marker = ROLE_STYLE[role]
        ax.errorbar([p.cost for p in mine], [100 * p.dice for p in mine],
                    yerr=[0 if np.isnan(p.dice_sd) else 100 * p.dice_sd for p in mine], fmt=marker, color=colour,
                    markersize=12 if marker == "*" else 8, capsize=4, label=role)
        for p in mine:
            ax.annotate(wrap(p.name), (p.cost, 100 * p.dice), textcoords="offset points", xytext=(6, 6), fontsize=7)
    if points and min(p.cost for p in points) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(cost_label)
    ax.set_ylabel("cross-validated Dice, foreground mean (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if points:
        ax.legend(title="role", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no model with complete folds and a known cost", ha="center", va="center",
                transform=ax.transAxes)
    if not_shown:
        fig.text(0.01, 0.01, "not shown (incomplete folds or unknown cost): " + ", ".join(not_shown), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def case_dice_boxplot(scores: Mapping[str, Sequence[float]], roles: Mapping[str, str], labels: Mapping[str, str],
                      title: str, path: Path) -> Path:
    """One box per model of its per-case Dice (foreground mean per case), the individual cases on top."""
    names = list(scores)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 6))
    data = [[100 * v for v in scores[n] if not np.isnan(v)] for n in names]
    boxes = ax.boxplot(data, patch_artist=True, showfliers=False, medianprops={"color": "black"})
    rng = np.random.default_rng(0)
    for i, (name, values) in enumerate(zip(names, data), start=1):
        colour, _ = ROLE_STYLE[roles[name]]
        boxes["boxes"][i - 1].set(facecolor=colour, alpha=0.35)
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, color=colour, zorder=3)
    ax.set_xticks(range(1, len(names) + 1), [labels[n] for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Dice per case, foreground mean (%)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    handles = [plt.Line2D([], [], color=ROLE_STYLE[r][0], marker="s", linestyle="", label=r)
               for r in ROLE_STYLE if r in roles.values()]
    ax.legend(handles=handles, title="role", loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(model: str, logs: Mapping[int, Mapping[str, List[float]]], path: Path) -> Path:
    """L_SEG, L_AFS and L_PWD per epoch of a distilled student, one line per fold."""
    fig, axes = plt.subplots(1, len(LOSS_CURVES), figsize=(5 * len(LOSS_CURVES), 4))
    for ax, (key, label) in zip(axes, LOSS_CURVES):
        for fold, log in sorted(logs.items()):
            values = log.get(key, [])
            ax.plot(range(len(values)), values, marker="o" if len(values) < 30 else None, label=f"fold {fold}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss (mean over the epoch)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{model}: distillation loss terms")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

