"""How good each teacher is before it teaches, and how much it counts in the distillation losses.

``holdout_dice`` segments cases with a frozen teacher as nnU-Net's final validation does, on the preprocessed
data with nnU-Net's sliding-window predictor, but without mirroring, and scores them with nnU-Net's foreground
Dice: per case and label 2TP / (2TP + FP + FN), NaN where reference and prediction are both empty; per label
the mean over the cases that are not NaN; then the mean over the foreground labels. A distilled student runs it
on its inner hold-out (its selection cases, ``trainers.protocol``), never on the fold's validation cases.

A teacher *fails* when its Dice is below ``failure_ratio`` times the best teacher's, or when every teacher
scores 0. ``teacher_weights`` gives the weights with which the teachers enter L_PWD's combined probabilities
and L_AFS's average over teachers:

* ``equal``: 1/K each, the paper's plain average;
* ``dice``: proportional to each teacher's Dice;
* ``drop_failed``: equal over the teachers that did not fail (the others get 0).

Where a weighting has nothing to go by (every Dice 0, or a Dice not known) the weights are equal, and the
reason is returned for the log.
"""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask

WEIGHTINGS = ("equal", "dice", "drop_failed")


def case_dice(reference: np.ndarray, prediction: np.ndarray, labels: Sequence[int],
              ignore_label: Optional[int] = None) -> Dict[int, float]:
    """Per foreground label, nnU-Net's Dice of one case (``compute_metrics``): NaN where both are empty."""
    ignore = reference == ignore_label if ignore_label is not None else None
    dice = {}
    for label in labels:
        tp, fp, fn, _ = compute_tp_fp_fn_tn(region_or_label_to_mask(reference, label),
                                            region_or_label_to_mask(prediction, label), ignore)
        dice[label] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return dice


def foreground_mean(per_case: Sequence[Dict[int, float]]) -> float:
    """nnU-Net's ``foreground_mean`` Dice (``compute_metrics_on_folder``): per label the mean over cases, NaN
    cases skipped; then the mean over labels. NaN if a label is empty in every reference and prediction."""
    labels = list(per_case[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a label empty everywhere: NaN, as in nnU-Net
        means = [np.nanmean([case[label] for case in per_case]) for label in labels]
    return float(np.mean(means))


@torch.no_grad()
def holdout_dice(network: torch.nn.Module, trainer_name: str, dataset, cases: Sequence[str], plans_manager,
                 configuration_manager, dataset_json: dict, device: torch.device) -> float:
    """Foreground Dice of ``network`` on ``cases`` of the preprocessed ``dataset`` (an nnU-Net dataset class)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    label_manager = plans_manager.get_label_manager(dataset_json)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=True, device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration_manager, None, dataset_json, trainer_name,
                                    None)
    predictor.network = network  # measured as it teaches: never torch.compile'd for a few cases
    per_case = []
    for case in cases:
        data, seg, _, _ = dataset.load_case(case)
        logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.array(data[:])))
        prediction = label_manager.convert_logits_to_segmentation(logits.float().cpu()).numpy()
        per_case.append(case_dice(np.asarray(seg[0]), prediction, label_manager.foreground_labels,
                                  label_manager.ignore_label))
    return foreground_mean(per_case)


def failed_teachers(dice: Sequence[Optional[float]], failure_ratio: float) -> List[bool]:
    """Which teachers failed: Dice below ``failure_ratio`` x the best Dice, or all at 0. Unknown Dice (None): no."""
    known = [d for d in dice if d is not None]
    best = max(known, default=None)
    if best is None:
        return [False] * len(dice)
    return [d is not None and (best == 0 or d < failure_ratio * best) for d in dice]


def teacher_weights(dice: Sequence[Optional[float]], failed: Sequence[bool],
                    how: str) -> Tuple[List[float], Optional[str]]:
    """(weight per teacher, summing to 1; why they are equal where ``how`` asked otherwise, else None)."""
    count = len(dice)
    equal = [1.0 / count] * count
    if how == "equal":
        return equal, None
    if how not in WEIGHTINGS:
        raise ValueError(f"unknown teacher weighting {how!r}; use one of {', '.join(WEIGHTINGS)}")
    if any(d is None for d in dice):
        return equal, "not every teacher's inner-hold-out Dice is known"
    if how == "dice":
        total = float(sum(dice))
        return ([d / total for d in dice], None) if total > 0 else \
            (equal, "every teacher has Dice 0 on the inner hold-out")
    kept = [not f for f in failed]
    if not any(kept):
        return equal, "every teacher failed on the inner hold-out"
    return [1.0 / sum(kept) if k else 0.0 for k in kept], None
