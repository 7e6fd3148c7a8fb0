"""The challenge's own figures for ``teachformer report``, beside nnU-Net's Dice: which challenge a dataset
comes from (the converter records it in dataset.json) and the report section that scores every model's
cross-validation predictions that challenge's way (``hecktor21``, ``picai``)."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from nnunet_teachformer.errors import TeachFormerError

HECKTOR21 = "HECKTOR 2021"
PICAI22 = "PI-CAI 2022"


def challenge_of(dataset_json: dict) -> Optional[str]:
    """HECKTOR21, PICAI22 or None, from the record our converters write into dataset.json."""
    source = str(dataset_json.get("teachformer", {}).get("source", ""))
    return next((c for c in (HECKTOR21, PICAI22) if source.startswith(c)), None)


@dataclass
class ChallengeSection:
    """Markdown lines for report.md and one dict per model for challenge.csv."""
    lines: List[str] = field(default_factory=list)
    rows: List[dict] = field(default_factory=list)


Predictions = Dict[str, Dict[str, Path]]  # model name -> case -> its validation segmentation (all folds)


def hecktor_section(dataset_json: dict, predictions: Predictions) -> ChallengeSection:
    """The challenge's figures of each model's validation segmentations."""
    from nnunet_teachformer.evaluation.hecktor21 import score_files
    record = dataset_json.get("teachformer", {})
    source = Path(record.get("source_folder", ""))
    section = ChallengeSection(["## HECKTOR 2021 protocol", ""])
    if not record.get("source_folder") or not source.is_dir():
        section.lines += [f"Not computed: the challenge folder the dataset was converted from "
                          f"({record.get('source_folder', 'not recorded')}) is not there. Score a folder with "
                          f"`teachformer evaluate hecktor21 --predictions DIR --source ORIGINAL_FOLDER`.", ""]
        return section
    section.lines += ["Validation predictions of all folds resampled back to each patient's original CT grid and "
                      f"scored in the challenge's bounding box ({source}): mean DSC and median HD95 over the cases, "
                      "as the challenge ranked them (an empty prediction scores DSC 0 and HD95 0, as its evaluator "
                      "does). nnU-Net's Dice above is on the 1 mm crop.", "",
                      "| Model | Cases | Mean DSC (%) | Median HD95 (mm) | Empty predictions |", "|---|---|---|---|---|"]
    for name, files in predictions.items():
        try:
            scores = score_files(list(files.values()), source)
        except TeachFormerError as e:
            section.lines.append(f"| {name} | - | not computed: {str(e).splitlines()[0]} | | |")
            continue
        section.lines.append(f"| {name} | {len(scores.cases)} | {100 * scores.mean_dsc:.2f} | "
                             f"{scores.median_hd95:.2f} | {scores.empty} |")
        section.rows.append({"model": name, "challenge": HECKTOR21, "cases": len(scores.cases),
                             "mean_dsc": scores.mean_dsc, "median_hd95_mm": scores.median_hd95,
                             "empty_predictions": scores.empty})
    section.lines.append("")
    return section


def picai_section(predictions: Predictions, labels: Path, reference: Optional[str]) -> ChallengeSection:
    """The challenge's figures of each model from the probabilities beside its validation segmentations (the
    ``<case>.npz`` that ``nnUNetv2_train --npz`` writes). Each model is compared with ``reference`` on the
    same cases (paired case bootstrap of the ranking score)."""
    import tempfile

    from nnunet_teachformer.evaluation.picai import (bootstrap_ci, compare, evaluate_picai22, format_interval,
                                                     format_value)
    section = ChallengeSection(["## PI-CAI 2022 protocol", "",
                                "csPCa detection from the validation probabilities of all folds, scored with "
                                "picai_eval as the challenge does: AUROC (case level), AP (lesion level) and the "
                                "ranking score (AUROC + AP) / 2, each with its 95 % case-bootstrap CI; Δscore = "
                                "reference − model, paired case bootstrap. nnU-Net's Dice is in the table above.",
                                "", "| Model | Cases | csPCa | AUROC [95 % CI] | AP [95 % CI] | Ranking score [95 % CI] "
                                "| Δscore vs reference [95 % CI], p |", "|---|---|---|---|---|---|---|"])
    scored = {}
    for name, files in predictions.items():
        npz = {case: path.with_name(case + ".npz") for case, path in files.items()}
        lacking = [c for c, p in npz.items() if not p.is_file()]
        if lacking:
            section.lines.append(f"| {name} | {len(npz)} | - | not computed: {len(lacking)} validation case(s) have no "
                                 f"probabilities (.npz); train with --npz (a finished fold: nnUNetv2_train ... --val "
                                 f"--npz) | | | |")
            continue
        with tempfile.TemporaryDirectory() as folder:  # the folds' npz files side by side, as picai_eval reads them
            for case, path in npz.items():
                (Path(folder) / path.name).symlink_to(path.resolve())
            try:
                scores = evaluate_picai22(folder, labels, cases=sorted(npz))
            except TeachFormerError as e:
                section.lines.append(f"| {name} | {len(npz)} | - | not computed: {str(e).splitlines()[0]} | | | |")
                continue
        scored[name] = (scores, bootstrap_ci(scores))
    for name, (scores, ci) in scored.items():
        cells = [f"{format_value(getattr(scores, f), scores.undefined(f))} "
                 f"[{format_interval(getattr(ci, f), scores.undefined(f))}]" for f in ("auroc", "ap", "score")]
        delta = "reference" if name == reference else "-"
        if name != reference and reference in scored and \
                set(scores.metrics.subject_list) == set(scored[reference][0].metrics.subject_list):
            d = compare(scored[reference][0], scores).score
            why = scores.undefined("score")
            delta = why or (f"{format_value(d.difference, None, signed=True)} [{format_interval(d.ci, None)}], "
                            f"p = {d.p_value:.4f}")
        section.lines.append(f"| {name} | {len(scores.cases)} | {scores.positives} | " + " | ".join(cells) +
                             f" | {delta} |")
        section.rows.append({"model": name, "challenge": PICAI22, "cases": len(scores.cases),
                             "cspca_cases": scores.positives, "auroc": scores.auroc, "ap": scores.ap,
                             "ranking_score": scores.score, "auroc_ci": ci.auroc, "ap_ci": ci.ap,
                             "ranking_score_ci": ci.score})
    section.lines.append("")
    return section


def report_section(dataset_json: dict, predictions: Predictions, gt_segmentations: Path,
                   reference: Optional[str]) -> Optional[ChallengeSection]:
    """The section of the challenge the dataset comes from, or None for any other dataset."""
    challenge = challenge_of(dataset_json)
    if challenge == HECKTOR21:
        return hecktor_section(dataset_json, predictions)
    if challenge == PICAI22:
        return picai_section(predictions, gt_segmentations, reference)
    return None
