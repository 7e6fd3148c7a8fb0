"""A PNG gallery of validation cases: every input channel (e.g. CT and PET), the ground truth, and each
model's validation prediction, at the axial slice with the largest foreground (tumour) area.

Rows are cases, columns are the input channels (ground truth outlined), the ground truth, then one
column per model: its prediction filled over the first channel with the ground truth outlined, titled
with the case's Dice. Images come from ``nnUNet_raw/<Dataset>/imagesTr``, labels from nnU-Net's
``gt_segmentations``, predictions from the model's ``fold_X/validation`` folder of the fold that
validated the case.
"""
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from nnunet_teachformer.evaluation.plots import wrap  # noqa: E402

PANEL_INCHES = 2.6


def pick_cases(scores: Mapping[str, float], count: int = 3) -> list:
    """The best, median and worst cases by score (NaN scores last), or all cases if there are fewer."""
    ranked = sorted(scores, key=lambda c: (np.isnan(scores[c]), -np.nan_to_num(scores[c], nan=0.0), c))
    if len(ranked) <= count:
        return ranked
    positions = np.linspace(0, len(ranked) - 1, count).round().astype(int)
    return [ranked[i] for i in positions]


def largest_foreground_slice(label: np.ndarray) -> int:
    """Index along axis 0 of the slice with the most foreground voxels (the middle slice if there is none)."""
    area = (label > 0).reshape(label.shape[0], -1).sum(axis=1)
    return int(np.argmax(area)) if area.any() else label.shape[0] // 2


def _window(image: np.ndarray) -> tuple:
    low, high = np.percentile(image, [1, 99])
    return float(low), float(high if high > low else low + 1)


def gallery(cases: Sequence[str], image_files: Mapping[str, Sequence[Path]], reference_files: Mapping[str, Path],
            predictions: Mapping[str, Mapping[str, Path]], case_dice: Mapping[str, Mapping[str, float]],
            dataset_json: dict, reader, path: Path, title: str) -> Path:
    """``predictions[model][case]`` is the model's prediction file (absent: the panel says missing),
    ``case_dice[model][case]`` its case score (fraction)."""
    channel_names = [dataset_json["channel_names"][k] for k in sorted(dataset_json["channel_names"], key=int)]
    label_names = {v: k for k, v in dataset_json["labels"].items() if isinstance(v, int) and v > 0}
    colours = plt.get_cmap("tab10")
    label_colour = {label: colours((i + 1) % 10) for i, label in enumerate(sorted(label_names))}
    max_label = max(label_names, default=1)
    overlay = ListedColormap([(0, 0, 0, 0)] + [label_colour.get(v, (0, 0, 0, 0)) for v in range(1, max_label + 1)])

    models = list(predictions)
    columns = len(channel_names) + 1 + len(models)
    size = (PANEL_INCHES * columns, (PANEL_INCHES + 0.4) * len(cases) + 1)
    fig, axes = plt.subplots(len(cases), columns, figsize=size, squeeze=False, layout="constrained")

    def show_labels(ax, label_slice, filled: bool, aspect: float):
        if filled:
            ax.imshow(np.ma.masked_equal(label_slice, 0), cmap=overlay, vmin=0, vmax=max_label,
                      interpolation="nearest", alpha=0.6, aspect=aspect)
        for label, colour in label_colour.items():
            if (label_slice == label).any():
                ax.contour(label_slice == label, levels=[0.5], colors=[colour], linewidths=1.0)

    for row, case in enumerate(cases):
        images, properties = reader.read_images([str(f) for f in image_files[case]])
        reference, _ = reader.read_seg(str(reference_files[case]))
        reference = reference[0]
        z = largest_foreground_slice(reference)
        spacing = properties["spacing"]
        aspect = float(spacing[-2] / spacing[-1]) if len(spacing) >= 2 else 1.0
        windows = [_window(images[c]) for c in range(len(channel_names))]

        def show_image(ax, channel=0):
            ax.imshow(images[channel, z], cmap="gray", vmin=windows[channel][0], vmax=windows[channel][1],
                      aspect=aspect)

        for c, name in enumerate(channel_names):
            ax = axes[row, c]
            show_image(ax, c)
            show_labels(ax, reference[z], filled=False, aspect=aspect)
            ax.set_title(f"{case} slice {z}\n{name} + ground truth" if c == 0 else f"{name} + ground truth",
                         fontsize=8)
        ax = axes[row, len(channel_names)]
        show_image(ax)
        show_labels(ax, reference[z], filled=True, aspect=aspect)
        ax.set_title("ground truth", fontsize=8)
        for m, model in enumerate(models):
            ax = axes[row, len(channel_names) + 1 + m]
            show_image(ax)
            prediction_file: Optional[Path] = predictions[model].get(case)
            if prediction_file is None or not Path(prediction_file).is_file():
                ax.set_title(f"{wrap(model)}\nprediction missing", fontsize=8)
            else:
                prediction, _ = reader.read_seg(str(prediction_file))
                show_labels(ax, prediction[0, z], filled=True, aspect=aspect)
                show_labels(ax, reference[z], filled=False, aspect=aspect)
                dice = case_dice.get(model, {}).get(case, float("nan"))
                ax.set_title(f"{wrap(model)}\n" + ("Dice n/a" if np.isnan(dice) else f"Dice {100 * dice:.1f} %"),
                             fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=label_colour[v], label=label_names[v]) for v in sorted(label_names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles) + 1, fontsize=9,
               title="filled: prediction (ground truth in its column); outline: ground truth")
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def case_files(raw_images: Path, case: str, dataset_json: dict) -> List[Path]:
    """The raw image file of each channel of a case (nnU-Net's CASE_XXXX naming)."""
    ending = dataset_json["file_ending"]
    return [raw_images / f"{case}_{int(k):04d}{ending}" for k in sorted(dataset_json["channel_names"], key=int)]
