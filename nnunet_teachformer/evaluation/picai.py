# Over 400 lines because it is one protocol kept whole: PI-CAI scoring, its bootstrap CIs and input checks.
"""PI-CAI 2022 (csPCa detection in prostate bpMRI) scored as the challenge scores it, with its own libraries.

Cite: Saha et al., "Artificial intelligence and radiologists in prostate cancer detection on MRI (PI-CAI)",
Lancet Oncology 2024; evaluation code: DIAGNijmegen/picai_eval.

Input: the softmax probabilities nnU-Net saves (``<case>.npz``, key ``probabilities``, shape (classes, z, y, x)
in SimpleITK's array order; written by ``nnUNetv2_predict --save_probabilities`` and, for a fold's
validation cases, by ``nnUNetv2_train --npz`` into fold_X/validation/) and nnU-Net label files
(``<case>.nii.gz``: 0 background, 1 csPCa). Class 1 is csPCa.

Nothing here re-implements the challenge's scoring:

- detection map: report_guided_annotation's ``extract_lesion_candidates(softmax, threshold="dynamic")[0]``
  on the csPCa probability, the call (and default threshold) of picai_baseline's nnU-Net evaluation
  (``picai_baseline/nnunet/eval.py``: ``evaluate(threshold="dynamic")`` and its ``--threshold`` default);
- scoring: ``picai_eval.evaluate`` with its defaults (a candidate hits a lesion at IoU >= 0.1; case-level
  likelihood = the maximum of the detection map), reading the npz and label files itself, as
  ``picai_eval.evaluate_folder`` does. AUROC is case level, AP lesion level, and the ranking score is
  (AUROC + AP) / 2 (``Metrics.auroc``, ``Metrics.AP``, ``Metrics.score``).

Confidence intervals (``bootstrap_ci``) resample the cases exactly as ``Metrics.bootstrap_score_ci`` does
(``numpy.random.default_rng(seed).choice`` over the cases, percentile 95 % CI), so with the same seed they are
its intervals; unlike it, a resample in which a figure is undefined (AUROC without a negative or a positive
case, AP without a lesion) is left out of that figure's interval and counted, rather than making it NaN.
``compare`` is a paired case bootstrap of the difference between two models on the same cases.

With no negative case (e.g. a dataset converted with ``--positives-only``: the paper's 220 cases) AUROC,
and so the ranking score, is undefined: ``None``, printed as "undefined (no negative case)"; AP stays defined.
"""
import contextlib
import io
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.optional_imports import optional_import

_PICAI = dict(extra="picai", purpose="PI-CAI 2022 scoring")
with contextlib.redirect_stdout(io.StringIO()):  # both print a banner on import
    Metrics = optional_import("picai_eval", "Metrics", **_PICAI)
    evaluate = optional_import("picai_eval", "evaluate", **_PICAI)
    read_label = optional_import("picai_eval.image_utils", "read_label", **_PICAI)
    read_prediction = optional_import("picai_eval.image_utils", "read_prediction", **_PICAI)
    extract_lesion_candidates = optional_import("report_guided_annotation", "extract_lesion_candidates", **_PICAI)

DETECTION_THRESHOLD = "dynamic"  # picai_baseline/nnunet/eval.py (nnunet_baseline.py's pipeline: "dynamic-fast")
THRESHOLDS = ("dynamic", "dynamic-fast")
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
PREDICTION_SUFFIX = ".npz"
LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha")
NO_NEGATIVE = "undefined (no negative case)"
NO_POSITIVE = "undefined (no csPCa case)"

Interval = Tuple[float, float]


@dataclass(frozen=True)
class CaseDetection:
    """One case as picai_eval scored it. ``lesion_results`` is picai_eval's list for the case: one
    (is_lesion, confidence, overlap) per ground-truth lesion (confidence 0 where no candidate hit it) and per
    false-positive candidate."""
    case: str
    positive: bool  # the label holds csPCa
    confidence: float  # case-level csPCa likelihood: the detection map's maximum (0: no lesion candidate)
    lesions: int  # ground-truth lesions
    detected: int  # of them hit by a candidate (IoU >= 0.1)
    false_positives: int  # candidates that hit no lesion
    lesion_results: Tuple[Tuple[int, float, float], ...] = ()

    @property
    def missed(self) -> int:
        return self.lesions - self.detected


@dataclass(frozen=True)
class PicaiCI:
    """Percentile bootstrap confidence intervals (``None``: the figure is undefined on these cases)."""
    auroc: Optional[Interval]
    ap: Optional[Interval]
    score: Optional[Interval]
    resamples: int
    seed: int
    skipped: Dict[str, int] = field(default_factory=dict)  # resamples left out per figure (undefined there)


@dataclass
class PicaiScores:
    """PI-CAI 2022 figures of one model: ``auroc`` and ``score`` are ``None`` without a negative case, ``ap``
    and ``auroc`` without a csPCa case. ``metrics`` is picai_eval's ``Metrics`` (curves, ``save``)."""
    cases: List[CaseDetection]
    auroc: Optional[float]
    ap: Optional[float]
    threshold: str
    predictions: Path
    metrics: Metrics = field(repr=False, compare=False)

    @property
    def score(self) -> Optional[float]:
        """The ranking score, (AUROC + AP) / 2."""
        return None if self.auroc is None or self.ap is None else (self.auroc + self.ap) / 2

    @property
    def positives(self) -> int:
        return sum(c.positive for c in self.cases)

    @property
    def negatives(self) -> int:
        return len(self.cases) - self.positives

    @property
    def lesions(self) -> int:
        return sum(c.lesions for c in self.cases)

    def undefined(self, figure: str) -> Optional[str]:
        """Why ``figure`` ("auroc", "ap" or "score") is undefined on these cases, or ``None``."""
        return _undefined(figure, self.positives, self.negatives)

    def __str__(self) -> str:
        return (f"PI-CAI 2022: {len(self.cases)} cases ({self.positives} with csPCa), AUROC "
                f"{format_value(self.auroc, self.undefined('auroc'))}, AP {format_value(self.ap, self.undefined('ap'))}, "
                f"ranking score {format_value(self.score, self.undefined('score'))}")

    def table(self, ci: Optional[PicaiCI] = None) -> str:
        """The challenge's figures as a markdown table, with their 95 % CIs where ``ci`` is given."""
        def row(name, figure):
            value = getattr(self, figure)
            interval = "" if ci is None else format_interval(getattr(ci, figure), self.undefined(figure))
            return f"| {name} | {format_value(value, self.undefined(figure))} | {interval} |"
        lines = ["| PI-CAI 2022 | Value | 95 % CI |", "|---|---|---|",
                 f"| Cases | {len(self.cases)} | |",
                 f"| Positives (csPCa) | {self.positives} ({self.lesions} lesions) | |",
                 row("AUROC (case level)", "auroc"), row("AP (lesion level)", "ap"),
                 row("Ranking score (AUROC + AP) / 2", "score"), "", _protocol(self.threshold, ci)]
        for figure, name in (("auroc", "AUROC (and the ranking score)"), ("ap", "AP")):
            if ci is not None and self.undefined(figure) is None and ci.skipped.get(figure):
                lines.append(f"{name} undefined in {ci.skipped[figure]} of {ci.resamples} resamples (left out of "
                             f"its CI).")
        return "\n".join(lines)

    def case_table(self) -> str:
        lines = ["| Case | csPCa | Likelihood | Lesions | Detected | False positives |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.case} | {'yes' if c.positive else 'no'} | {c.confidence:.4f} | {c.lesions} | {c.detected} | "
                  f"{c.false_positives} |" for c in self.cases]
        return "\n".join(lines)


@dataclass(frozen=True)
class Difference:
    """``a - b`` for one figure on all cases, its paired bootstrap CI and two-sided p-value (``None``: the
    figure is undefined on these cases)."""
    figure: str
    a: Optional[float]
    b: Optional[float]
    difference: Optional[float]
    ci: Optional[Interval]
    p_value: Optional[float]
    skipped: int = 0  # resamples in which the figure was undefined (left out)


@dataclass(frozen=True)
class PairedComparison:
    """Model ``a`` against model ``b`` on the same cases; positive differences favour ``a``."""
    a: str
    b: str
    cases: int
    positives: int
    auroc: Difference
    ap: Difference
    score: Difference
    resamples: int
    seed: int

    def table(self) -> str:
        undefined = {f: _undefined(f, self.positives, self.cases - self.positives) for f in ("auroc", "ap", "score")}

        def row(name, d: Difference):
            why = undefined[d.figure]
            p = "" if d.p_value is None else f"{d.p_value:.4f}"
            return (f"| {name} | {format_value(d.a, why)} | {format_value(d.b, why)} | {format_value(d.difference, why, signed=True)} | "
                    f"{format_interval(d.ci, why)} | {p if why is None else why} |")
        return "\n".join([
            f"A: {self.a}", f"B: {self.b}", "",
            "| PI-CAI 2022 | A | B | A - B | 95 % CI | p (two-sided) |", "|---|---|---|---|---|---|",
            row("AUROC (case level)", self.auroc), row("AP (lesion level)", self.ap),
            row("Ranking score", self.score), "",
            f"{self.cases} cases ({self.positives} with csPCa); paired percentile bootstrap of the cases, "
            f"{self.resamples} resamples, seed {self.seed}; p = 2 min(#(d* <= 0) + 1, #(d* >= 0) + 1) / "
            f"(resamples + 1)."])


def evaluate_picai22(predictions, labels, cases: Optional[Iterable[str]] = None,
                     threshold: str = DETECTION_THRESHOLD, num_parallel_calls: int = 3) -> PicaiScores:
    """Scores the ``<case>.npz`` probabilities in the folder ``predictions`` against the ``<case>.nii.gz``
    labels in the folder ``labels`` (e.g. the dataset's labelsTr, or nnUNet_preprocessed/<Dataset>/
    gt_segmentations). ``cases``: the cases to score (default: every npz in ``predictions``). ``threshold``:
    extract_lesion_candidates' (``dynamic``, picai_baseline's nnU-Net evaluation; ``dynamic-fast`` is
    faster). Every file is checked first; any problem raises one ``TeachFormerError`` listing them all."""
    if threshold not in THRESHOLDS:
        raise TeachFormerError(f"threshold {threshold!r} is not one of {', '.join(THRESHOLDS)}.")
    predictions, labels = Path(predictions), Path(labels)
    if not predictions.is_dir():
        raise TeachFormerError(f"--predictions {predictions} is not a folder of <case>.npz probabilities.")
    if not labels.is_dir():
        raise TeachFormerError(f"--labels {labels} is not a folder of <case>.nii.gz labels: give the dataset's "
                               f"labelsTr (or nnUNet_preprocessed/<Dataset>/gt_segmentations).")
    if cases is None:
        names = sorted(p.name[:-len(PREDICTION_SUFFIX)] for p in predictions.glob(f"*{PREDICTION_SUFFIX}"))
        if not names:
            raise TeachFormerError(
                f"no {PREDICTION_SUFFIX} probabilities in {predictions}: predict with nnUNetv2_predict "
                f"--save_probabilities (teachformer predict --save-probabilities), or give a model's fold_X/validation "
                f"folder after nnUNetv2_train --npz (add --val --npz to a finished training).")
    else:
        names = sorted({cases} if isinstance(cases, str) else set(cases))
        if not names:
            raise TeachFormerError("the list of cases to score is empty.")
    pairs = _checked_files(names, predictions, labels)

    def detection_map(softmax):
        return extract_lesion_candidates(softmax, threshold=threshold)[0]

    try:
        metrics = evaluate(y_det=[p for p, _ in pairs], y_true=[lbl for _, lbl in pairs], subject_list=names,
                           y_det_postprocess_func=detection_map, num_parallel_calls=num_parallel_calls)
    except Exception:  # a file whose header reads but whose data does not; anything else is re-raised
        culprit = _unreadable_culprit(pairs)
        if culprit is None:
            raise
        raise culprit from None
    return _scores(metrics, threshold, predictions)


def bootstrap_ci(scores: PicaiScores, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> PicaiCI:
    """Case-level percentile bootstrap 95 % CIs of AUROC, AP and the ranking score, drawn as picai_eval's
    ``Metrics.bootstrap_score_ci(n_bootstraps=resamples, seed=seed)`` draws them."""
    draws = _draws(scores.metrics, [scores.metrics], resamples, seed)
    values = {f: [d[0][f] for d in draws if d[0][f] is not None] for f in ("auroc", "ap", "score")}
    return PicaiCI(**{f: _percentiles(v) if scores.undefined(f) is None else None for f, v in values.items()},
                   resamples=resamples, seed=seed, skipped={f: resamples - len(v) for f, v in values.items()})


def compare(a: PicaiScores, b: PicaiScores, resamples: int = BOOTSTRAP_RESAMPLES,
            seed: int = BOOTSTRAP_SEED) -> PairedComparison:
    """Paired case bootstrap of ``a - b`` (AUROC, AP, ranking score): both models are scored on the same
    resampled cases; percentile 95 % CI and a two-sided p-value, 2 min(#(d* <= 0) + 1, #(d* >= 0) + 1) /
    (resamples + 1), capped at 1. Both must hold the same cases with the same labels."""
    only_a = sorted(set(a.metrics.subject_list) - set(b.metrics.subject_list))
    only_b = sorted(set(b.metrics.subject_list) - set(a.metrics.subject_list))
    if only_a or only_b:
        raise TeachFormerError(f"the two models were not scored on the same cases ({len(only_a)} only in "
                               f"{a.predictions}: {_some(only_a)}; {len(only_b)} only in {b.predictions}: "
                               f"{_some(only_b)}): pass the same cases= to evaluate_picai22 for both.")
    differ = [c for c in a.metrics.subject_list if a.metrics.case_target[c] != b.metrics.case_target[c]]
    if differ:
        raise TeachFormerError(f"the two models were scored against different labels ({_some(differ)} csPCa in "
                               f"one and not the other): score both against the same labels folder.")
    draws = _draws(a.metrics, [a.metrics, b.metrics], resamples, seed)
    figures = {}
    for f in ("auroc", "ap", "score"):
        va, vb = getattr(a, f), getattr(b, f)
        if a.undefined(f) is not None:
            figures[f] = Difference(f, None, None, None, None, None, skipped=resamples)
            continue
        d = np.array([x[f] - y[f] for x, y in draws if x[f] is not None and y[f] is not None])
        p = min(1.0, 2 * (min(np.sum(d <= 0), np.sum(d >= 0)) + 1) / (len(d) + 1)) if len(d) else None
        figures[f] = Difference(f, va, vb, va - vb, _percentiles(d), None if p is None else float(p),
                                skipped=resamples - len(d))
    return PairedComparison(str(a.predictions), str(b.predictions), len(a.cases), a.positives, resamples=resamples,
                            seed=seed, **figures)


def _checked_files(names: Sequence[str], predictions: Path, labels: Path) -> List[Tuple[Path, Path]]:
    """(npz, label) per case, after reading every header: each exists, reads, holds class 1 and has one shape."""
    pairs, problems = [], []
    for name in names:
        npz = predictions / f"{name}{PREDICTION_SUFFIX}"
        label = next((labels / f"{name}{s}" for s in LABEL_SUFFIXES if (labels / f"{name}{s}").is_file()), None)
        issues = []
        if not npz.is_file():
            issues.append(f"no prediction {npz}")
            shape = None
        else:
            try:
                shape = _npz_shape(npz)
            except _Unreadable as e:
                issues.append(f"{npz} {e}")
                shape = None
        if label is None:
            issues.append(f"no label {labels / (name + LABEL_SUFFIXES[0])}")
        else:
            try:
                label_shape = _label_shape(label)
            except _Unreadable as e:
                issues.append(f"{label} {e}")
            else:
                if shape is not None and shape[1:] != label_shape:
                    issues.append(f"{npz} holds probabilities on a {'x'.join(map(str, shape[1:]))} (z, y, x) grid but "
                                  f"its label {label} is {'x'.join(map(str, label_shape))}: the prediction is not of "
                                  f"this case's image")
                issues += _label_values_issue(label)
        if issues:
            problems.append(f"{name}: " + "; ".join(issues))
        else:
            pairs.append((npz, label))
    if problems:
        raise TeachFormerError(
            f"{len(problems)} of {len(names)} cases cannot be scored:\n  " + "\n  ".join(problems[:20])
            + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
            + f"\nGive the labels folder of the dataset the predictions were made from ({labels} now), predict the "
              f"missing cases again with nnUNetv2_predict --save_probabilities, or leave them out (cases=...).")
    return pairs


class _Unreadable(Exception):
    pass


def _npz_shape(path: Path) -> Tuple[int, ...]:
    """The shape of the array picai_eval reads from an npz ("softmax" if present, else "probabilities"),
    from its header alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            key = next((k for k in ("softmax.npy", "probabilities.npy") if k in members), None)
            if key is None:
                raise _Unreadable(f"has no 'probabilities' array (it holds {', '.join(members) or 'nothing'}): it "
                                  f"is not nnU-Net's --save_probabilities output")
            with archive.open(key) as f:
                major = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == (1, 0) else np.lib.format.read_array_header_2_0
                shape = tuple(read(f)[0])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _Unreadable(f"cannot be read ({e}): write it again with nnUNetv2_predict --save_probabilities") from None
    if len(shape) != 4 or shape[0] < 2:
        raise _Unreadable(f"holds an array of shape {shape}, not (classes, z, y, x) with class 1 = csPCa")
    return shape


def _label_shape(path: Path) -> Tuple[int, ...]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise _Unreadable(f"cannot be read ({str(e).strip().splitlines()[-1]})") from None
    if reader.GetDimension() != 3:
        raise _Unreadable(f"is {reader.GetDimension()}-D, not a 3-D label")
    return tuple(reader.GetSize()[::-1])


def _label_values_issue(path: Path) -> List[str]:
    """A reason when the label holds values other than 0 and 1: picai_eval would count every non-zero voxel as
    csPCa without a word, so e.g. an ISUP-graded delineation would be scored as if it were binary."""
    try:
        values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    except RuntimeError:
        return []  # header readable, data not: _unreadable_culprit names it
    other = [v for v in values if v not in (0, 1)]
    if not other:
        return []
    return [f"{path} holds the label values {', '.join(f'{v:g}' for v in values)}, not 0 and 1 (background, "
            f"csPCa): score against the labelsTr of the dataset teachformer convert picai22 wrote (0/1), or set "
            f"every lesion voxel to 1"]


def _unreadable_culprit(pairs: Sequence[Tuple[Path, Path]]) -> Optional[TeachFormerError]:
    """picai_eval failed past the headers: read each file in full, as it does, to name the first one at fault."""
    for npz, label in pairs:
        for path, read in ((npz, read_prediction), (label, read_label)):
            try:
                read(path)
            except Exception as e:  # noqa: BLE001 - any failure to read this file is the answer
                return TeachFormerError(f"{path} cannot be read ({type(e).__name__}: {e}): its header is intact but "
                                        f"its data is not. Write it again (predict the case again for an npz), or "
                                        f"leave the case out.")
    return None


def _scores(metrics: Metrics, threshold: str, predictions: Path) -> PicaiScores:
    cases = []
    for name in metrics.subject_list:
        results = tuple((int(t), float(c), float(o)) for t, c, o in metrics.lesion_results[name])
        cases.append(CaseDetection(
            case=name, positive=bool(metrics.case_target[name]), confidence=float(metrics.case_pred[name]),
            lesions=sum(t for t, _, _ in results), detected=sum(t == 1 and c > 0 for t, c, _ in results),
            false_positives=sum(t == 0 for t, _, _ in results), lesion_results=results))
    positives = sum(c.positive for c in cases)
    auroc = float(metrics.auroc) if 0 < positives < len(cases) else None
    ap = float(metrics.AP) if positives else None
    return PicaiScores(cases, auroc, ap, threshold, predictions, metrics)


def _figures(metrics: Metrics, sample) -> Dict[str, Optional[float]]:
    """AUROC, AP and ranking score on the cases ``sample`` (with repeats); ``None`` where undefined."""
    targets = [metrics.case_target[c] for c in sample]
    positives = int(np.sum(targets))
    auroc = float(metrics.calc_auroc(subject_list=sample)) if 0 < positives < len(targets) else None
    ap = float(metrics.calc_AP(subject_list=sample)) if positives else None
    return {"auroc": auroc, "ap": ap, "score": None if auroc is None or ap is None else (auroc + ap) / 2}


def _draws(reference: Metrics, models: Sequence[Metrics], resamples: int, seed: int):
    """Per resample, the figures of each model on the same cases, drawn as ``Metrics.bootstrap_score_ci``
    draws them."""
    rng = np.random.default_rng(seed)
    subjects = reference.subject_list
    out = []
    for _ in range(resamples):
        sample = rng.choice(subjects, size=len(subjects), replace=True)
        out.append([_figures(m, sample) for m in models])
    return out


def _percentiles(values) -> Optional[Interval]:
    if len(values) == 0:
        return None
    low, high = np.percentile(values, [50 * (1 - CONFIDENCE), 100 - 50 * (1 - CONFIDENCE)])
    return float(low), float(high)


def _undefined(figure: str, positives: int, negatives: int) -> Optional[str]:
    """AP needs a csPCa lesion; AUROC, and so the ranking score, also needs a negative case."""
    if not positives:
        return NO_POSITIVE
    if figure != "ap" and not negatives:
        return NO_NEGATIVE
    return None


def format_value(value: Optional[float], why: Optional[str], signed: bool = False) -> str:
    if why is not None or value is None:
        return why or "undefined"
    value = round(value, 4) + 0.0  # no "-0.0000"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_interval(interval: Optional[Interval], why: Optional[str]) -> str:
    if why is not None:
        return why
    return "undefined" if interval is None else f"{format_value(interval[0], None)} – {format_value(interval[1], None)}"


def _protocol(threshold: str, ci: Optional[PicaiCI]) -> str:
    text = (f"PI-CAI 2022 protocol: picai_eval {version('picai_eval')} (lesion hit at IoU >= 0.1, case likelihood "
            f"= detection-map maximum) on report_guided_annotation's extract_lesion_candidates(threshold="
            f"\"{threshold}\") of the csPCa probability")
    if ci is not None:
        text += f"; 95 % CI: percentile case bootstrap, {ci.resamples} resamples, seed {ci.seed}"
    return text + "."


def _some(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else "none"
