"""Per-case segmentation metrics: Dice from nnU-Net's own evaluation, HD95 from MONAI.

Dice always comes from nnU-Net's ``compute_metrics_on_folder`` (the numbers of its ``summary.json``),
so the report and nnU-Net never disagree. HD95 is MONAI's ``compute_hausdorff_distance`` with
``percentile=95`` in millimetres (the image spacing). It is undefined when the prediction or the
reference of a label is empty; such a case-label is NaN and counted, never replaced by a made-up
distance.

``evaluate_predictions`` is the entry point for any folder of predictions (held-out test sets of
the demo); the report uses the same functions on nnU-Net's ``fold_X/validation`` folders.
"""
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from nnunet_teachformer.errors import TeachFormerError

# per case, per label: {case: {label: value}}
CaseValues = Dict[str, Dict[int, float]]


def case_id(file_name: str, file_ending: str) -> str:
    name = os.path.basename(file_name)
    return name[:-len(file_ending)] if name.endswith(file_ending) else name


def dice_per_case(summary: dict, file_ending: str) -> CaseValues:
    """``{case: {label: Dice}}`` from a summary loaded with nnU-Net's ``load_summary_json`` (NaN kept)."""
    return {case_id(entry["prediction_file"], file_ending):
            {int(label): float(m["Dice"]) for label, m in entry["metrics"].items()}
            for entry in summary["metric_per_case"]}


def dice_empty_rule(value: float) -> float:
    """The report's rule for nnU-Net's NaN Dice: nnU-Net scores a label NaN when it is absent from both the
    prediction and the reference (tp + fp + fn = 0), i.e. a correct empty prediction; it counts as Dice 1.
    A false positive on an empty label already has Dice 0 in nnU-Net (2tp / (2tp + fp + fn) with tp = 0)."""
    return 1.0 if np.isnan(value) else float(value)


def case_score(values: Dict[int, float]) -> float:
    """Mean Dice over the foreground labels of one case, a correct empty prediction counting as 1
    (``dice_empty_rule``); NaN only for a case without labels."""
    return float(np.mean([dice_empty_rule(v) for v in values.values()])) if values else float("nan")


def hd95_of_masks(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> float:
    """HD95 in mm between two non-empty boolean masks (MONAI, ``spacing`` in the arrays' axis order): the one
    HD95 of the package, for the report and the challenge scorers."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        distance = compute_hausdorff_distance(torch.from_numpy(prediction[None, None]),
                                              torch.from_numpy(reference[None, None]),
                                              include_background=True, percentile=95, spacing=list(spacing))
    return float(distance.item())


def hd95(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int],
         spacing: Sequence[float]) -> Dict[int, float]:
    """HD95 in mm per label of one case (MONAI); NaN where the prediction or the reference is empty."""
    result = {}
    for label in labels:
        pred, ref = prediction == label, reference == label
        result[label] = hd95_of_masks(pred, ref, spacing) if pred.any() and ref.any() else float("nan")
    return result


def hd95_per_case(prediction_folder: Path, reference_folder: Path, cases: Sequence[str], labels: Sequence[int],
                  reader, file_ending: str) -> CaseValues:
    """HD95 for every case of a prediction folder against the reference folder; ``reader`` is an nnU-Net
    image reader/writer instance (arrays and spacing in nnU-Net's axis order)."""
    result = {}
    for case in cases:
        reference_file = Path(reference_folder, case + file_ending)
        if not reference_file.is_file():
            raise TeachFormerError(f"reference segmentation {reference_file} is missing: {prediction_folder} has a "
                                   f"prediction for {case}, but {reference_folder} has no label for it.")
        prediction, _ = reader.read_seg(str(Path(prediction_folder, case + file_ending)))
        reference, properties = reader.read_seg(str(reference_file))
        result[case] = hd95(prediction[0], reference[0], labels, properties["spacing"])
    return result


def count_undefined(values: CaseValues) -> int:
    """NaN (case, label) values: for Dice, the correct empty predictions ``dice_empty_rule`` scores 1; for
    HD95, the case-labels with an empty prediction or reference that are left out of its mean."""
    return sum(int(np.isnan(v)) for per_label in values.values() for v in per_label.values())


def label_manager_from_dataset_json(dataset_json: dict):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    return LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))


def evaluated_labels(label_manager) -> list:
    if label_manager.has_regions:
        raise TeachFormerError("dataset.json defines region-based labels; the report evaluates label maps only "
                               "(nnunet-teachformer trains softmax label maps).")
    return list(label_manager.foreground_labels)


@dataclass
class CaseMetrics:
    """Per-case metrics of one prediction folder: ``summary`` is nnU-Net's (as ``load_summary_json`` returns it)."""
    summary: dict
    dice: CaseValues
    hd95: CaseValues
    labels: Tuple[int, ...]
    label_names: Dict[int, str] = field(default_factory=dict)

    @property
    def hd95_undefined(self) -> int:
        return count_undefined(self.hd95)


def evaluate_predictions(prediction_folder, reference_folder, dataset_json, output_file: Optional[str] = None,
                         num_processes: Optional[int] = None) -> CaseMetrics:
    """Dice per case (nnU-Net's ``compute_metrics_on_folder``, written to ``output_file``, default
    ``prediction_folder/summary.json`` as ``nnUNetv2_evaluate_folder`` does) and HD95 per case (MONAI).

    ``dataset_json`` is the dict or the path of the dataset.json the predictions were made with.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder, load_summary_json
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    prediction_folder, reference_folder = Path(prediction_folder), Path(reference_folder)
    if not isinstance(dataset_json, dict):
        dataset_json = load_json(str(dataset_json))
    file_ending = dataset_json["file_ending"]
    predictions = sorted(p.name for p in prediction_folder.glob("*" + file_ending)) if prediction_folder.is_dir() \
        else []
    if not predictions:
        raise TeachFormerError(f"{prediction_folder} holds no predictions (*{file_ending}); predict first "
                               f"(teachformer predict or nnUNetv2_predict -o {prediction_folder}).")
    missing = [p for p in predictions if not (reference_folder / p).is_file()]
    if missing:
        raise TeachFormerError(f"{reference_folder} has no reference label for {len(missing)} prediction(s) of "
                               f"{prediction_folder} (e.g. {missing[0]}); point the reference at the labels of "
                               f"these cases (labelsTs for imagesTs).")
    label_manager = label_manager_from_dataset_json(dataset_json)
    labels = evaluated_labels(label_manager)
    reader = determine_reader_writer_from_dataset_json(dataset_json, str(prediction_folder / predictions[0]))()
    output_file = str(output_file or prediction_folder / "summary.json")
    compute_metrics_on_folder(str(reference_folder), str(prediction_folder), output_file, reader, file_ending,
                              labels, label_manager.ignore_label,
                              num_processes=num_processes or default_num_processes)
    summary = load_summary_json(output_file)
    dice = dice_per_case(summary, file_ending)
    names = {v: k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    return CaseMetrics(summary, dice, hd95_per_case(prediction_folder, reference_folder, sorted(dice), labels,
                                                    reader, file_ending), tuple(labels), names)
