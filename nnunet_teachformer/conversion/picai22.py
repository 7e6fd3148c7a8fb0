"""PI-CAI 2022 public training set (bpMRI: T2W, ADC, HBV; csPCa lesions) to an nnU-Net raw dataset.

Input, as the challenge distributes it:

    IMAGES_DIR   picai_public_images_fold{0..4}.zip, unpacked either each into its own folder fold<k>/
                 or all into one folder, as picai_baseline's instructions do:
                 [fold<k>/]<patient_id>/<patient_id>_<study_id>_{t2w,adc,hbv,sag,cor}.mha
    LABELS_DIR   the picai_labels repository:
                 csPCa_lesion_delineations/human_expert/resampled/<patient_id>_<study_id>.nii.gz  (0, ISUP 2..5)
                 csPCa_lesion_delineations/AI/Bosma22a/<patient_id>_<study_id>.nii.gz           (0, 1)

The preprocessing is picai_prep's (the challenge's own converter), not a rewrite: ``Sample.preprocess``
centre-crops or pads every scan to ``matrix_size`` voxels (default 24x384x384, the paper's input) at its
own spacing, resamples ADC and HBV onto the cropped T2W grid (cubic B-spline) and the label by nearest
neighbour, and refuses a case whose number of lesions changes on the way (found while converting, such a
case stops the conversion like a failed check, unless skip_bad). Channels: ``_0000`` T2W,
``_0001`` ADC, ``_0002`` HBV (the "DWI" channel); label 1 = csPCa (ISUP >= 2), 0 = everything else.

Cases without a label are left out, as picai_prep's archive builder does. With ``labels="human"`` that
is the 205 csPCa cases without an expert delineation (1295 cases remain); ``"human+ai"`` gives them the
AI delineations of Bosma et al. 2022, as the PI-CAI semi-supervised baseline does (1500 cases).
``positives_only`` keeps only cases with at least one lesion (with human labels: the 220 cases the
Teach-Former paper trained on).

The official five folds are the folds the images are distributed in (fold<k>.zip holds the validation
cases of fold k). A case under a fold<k> folder is in fold k; any other case takes its fold from
picai_baseline's published splits (``picai_baseline.splits.picai.valid_splits``: each fold's validation
cases, all 1500 public cases), and a fold<k> folder that contradicts them is a problem of that case.
``splits="picai"`` writes the folds as ``splits_final.json`` and needs a fold for every case. dataset.json
records each case's fold and where the folds came from (``fold_source``: "folders", "picai_baseline" or
"mixed").
"""
import contextlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_teachformer.conversion.dataset_writer import atomic_dataset_folder, dataset_folder_name, resolve_raw_root
from nnunet_teachformer.conversion.validation import (Problems, describe_vectors, enforce_problems, finite_problem,
                                                      label_values_problem, overlap_problem, read_image, zyx_size,
                                                      zyx_spacing)
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.optional_imports import optional_import

_PICAI = dict(extra="picai", purpose="PI-CAI 2022 conversion")
PreprocessingSettings = optional_import("picai_prep.preprocessing", "PreprocessingSettings", **_PICAI)
Sample = optional_import("picai_prep.preprocessing", "Sample", **_PICAI)

DATASET_NAME = "PICAI2022"
SEQUENCES = ("t2w", "adc", "hbv")  # channel order
CHANNELS = {0: "T2W", 1: "ADC", 2: "HBV"}
LABELS = {"background": 0, "csPCa": 1}
# expert labels hold the ISUP grade (2..5) of each csPCa lesion, AI labels hold 1: every value >= 1 is csPCa
LABEL_VALUES = (0, 1, 2, 3, 4, 5)
HUMAN_LABELS = Path("csPCa_lesion_delineations/human_expert/resampled")
AI_LABELS = Path("csPCa_lesion_delineations/AI/Bosma22a")
LABEL_SOURCES = {"human": (HUMAN_LABELS,), "human+ai": (HUMAN_LABELS, AI_LABELS)}
MATRIX_SIZE = (24, 384, 384)  # (z, y, x) voxels, the paper's input size
NUM_FOLDS = 5
SCAN_NAME = re.compile(r"^(?P<patient>[^_/]+)_(?P<study>[^_/]+)_(?P<sequence>t2w|adc|hbv)\.mha$")
FOLD_FOLDER = re.compile(r"fold(\d)$")


@dataclass
class PicaiCase:
    case_id: str  # <patient_id>_<study_id>, the name picai_labels uses
    patient_id: str
    folder: Path
    fold: Optional[int]
    fold_source: Optional[str]  # "folders" (a fold<k> folder above the patient's) or "picai_baseline"
    label_path: Optional[Path] = None
    problems: List[str] = field(default_factory=list)
    positive: bool = False  # set by check_case: the label has a lesion

    def scan(self, sequence: str) -> Path:
        return self.folder / f"{self.case_id}_{sequence}.mha"


def published_folds() -> Dict[str, int]:
    """<patient_id>_<study_id> -> fold, for the 1500 public cases: picai_baseline's validation splits."""
    with contextlib.redirect_stdout(io.StringIO()):  # picai_baseline prints a banner when imported
        valid_splits = optional_import("picai_baseline.splits.picai", "valid_splits", **_PICAI)
    return {case_id: fold for fold, config in valid_splits.items() for case_id in config["subject_list"]}


def find_cases(images_dir: Path, labels_dir: Path, labels: str) -> List[PicaiCase]:
    """Every study with at least one of its T2W, ADC or HBV scans under ``images_dir``, with its label and fold."""
    if not images_dir.is_dir():
        raise TeachFormerError(f"{images_dir} is not a folder: pass the folder the picai_public_images_fold<k>.zip "
                               f"files were unpacked into.")
    for sub in LABEL_SOURCES[labels]:
        if not (labels_dir / sub).is_dir():
            raise TeachFormerError(f"{labels_dir / sub} is missing: LABELS_DIR must be the picai_labels repository "
                                   f"(DIAGNijmegen/picai_labels), which holds {sub}.")
    folders: Dict[str, set] = {}
    for path in sorted(images_dir.rglob("*.mha")):
        match = SCAN_NAME.match(path.name)
        if match:
            folders.setdefault(f"{match['patient']}_{match['study']}", set()).add(path.parent)
    published = published_folds()
    cases = []
    for case_id, where in sorted(folders.items()):
        folder = sorted(where)[0]
        folds = [int(m.group(1)) for m in map(FOLD_FOLDER.search, folder.relative_to(images_dir).parts) if m]
        fold = folds[-1] if folds else published.get(case_id)
        source = "folders" if folds else "picai_baseline" if fold is not None else None
        case = PicaiCase(case_id, case_id.split("_")[0], folder, fold, source)
        if published.get(case_id, fold) != fold:
            case.problems.append(f"it is in a fold{fold} folder ({folder}), but picai_baseline's published splits "
                                 f"put it in fold {published[case_id]}")
        if len(where) > 1:
            case.problems.append(f"found in {len(where)} folders ({', '.join(map(str, sorted(where)))})")
        cases.append(case)
    if not cases:
        raise TeachFormerError(f"No PI-CAI scans (<patient_id>_<study_id>_t2w.mha, _adc.mha, _hbv.mha) under "
                               f"{images_dir}: pass the folder the picai_public_images_fold<k>.zip files were "
                               f"unpacked into.")
    for case in cases:
        case.label_path = next((labels_dir / sub / f"{case.case_id}.nii.gz" for sub in LABEL_SOURCES[labels]
                                if (labels_dir / sub / f"{case.case_id}.nii.gz").is_file()), None)
    return cases


def check_case(case: PicaiCase) -> List[str]:
    """Every reason this case cannot be converted (empty if it can); notes whether its label has a lesion."""
    problems = list(case.problems)
    scans = {s: read_image(case.scan(s), s.upper(), problems) for s in SEQUENCES}
    label = read_image(case.label_path, "label", problems)
    for sequence, image in scans.items():
        if image is not None:
            problems += finite_problem(sequence.upper(), image, case.scan(sequence))
    t2w = scans["t2w"]
    if t2w is not None:
        for sequence in SEQUENCES[1:]:
            if scans[sequence] is not None:
                problems += overlap_problem(sequence.upper(), scans[sequence], "T2W", t2w)
    if label is not None:
        problems += finite_problem("label", label, case.label_path)
        problems += label_values_problem(f"label ({case.label_path.name})", label, list(LABEL_VALUES))
        case.positive = bool(np.any(sitk.GetArrayViewFromImage(label) >= 1))
        if t2w is not None:
            problems += overlap_problem("label", label, "T2W", t2w)
    return problems


def binary_cspca(label: sitk.Image) -> sitk.Image:
    """ISUP >= 2 lesions (expert values 2..5, AI value 1) -> 1, the rest -> 0."""
    binary = sitk.Cast(label >= 1, sitk.sitkUInt8)
    binary.CopyInformation(label)
    return binary


def convert_case(case: PicaiCase, matrix_size: Sequence[int], out: Path) -> sitk.Image:
    """Writes the case under ``out`` with picai_prep; returns the output T2W. Raises AssertionError, before
    writing, when picai_prep's own checks fail (a lesion lost or split by the crop, scans misaligned)."""
    sample = Sample(scans=[sitk.ReadImage(str(case.scan(s))) for s in SEQUENCES],
                    lbl=sitk.ReadImage(str(case.label_path)), name=case.case_id,
                    settings=PreprocessingSettings(matrix_size=list(matrix_size)), lbl_preprocess_func=binary_cspca)
    sample.preprocess()
    for channel, scan in enumerate(sample.scans):
        sitk.WriteImage(scan, str(out / "imagesTr" / f"{case.case_id}_{channel:04d}.nii.gz"), useCompression=True)
    sitk.WriteImage(sample.lbl, str(out / "labelsTr" / f"{case.case_id}.nii.gz"), useCompression=True)
    return sample.scans[0]


def picai_folds(cases: List[PicaiCase]) -> List[Dict[str, List[str]]]:
    """The official folds: fold k validates on the cases distributed in picai_public_images_fold<k>.zip."""
    unplaced = [c.case_id for c in cases if c.fold is None]
    if unplaced:
        raise TeachFormerError(
            f"--splits picai needs the fold of every case, but {len(unplaced)} cases are neither under a fold<k> "
            f"folder nor in picai_baseline's published splits of the public PI-CAI cases (e.g. "
            f"{', '.join(unplaced[:3])}). Put each case's patient folder under IMAGES_DIR/fold<k>/ (k = 0..4) to "
            f"give it fold k, or convert without --splits.")
    patient_folds: Dict[str, set] = {}
    for case in cases:
        patient_folds.setdefault(case.patient_id, set()).add(case.fold)
    split_patients = sorted(p for p, folds in patient_folds.items() if len(folds) > 1)
    if split_patients:
        raise TeachFormerError(f"Patients {', '.join(split_patients[:5])} have studies in more than one fold; the "
                               f"official folds keep each patient in one fold. Check how the archives were "
                               f"unpacked.")
    empty = [k for k in range(NUM_FOLDS) if not any(c.fold == k for c in cases)]
    if empty or max(c.fold for c in cases) >= NUM_FOLDS:
        raise TeachFormerError(f"--splits picai needs converted cases in each of fold0..fold{NUM_FOLDS - 1}; "
                               f"none in fold(s) {', '.join(map(str, empty)) or '-'} (or a fold folder beyond "
                               f"fold{NUM_FOLDS - 1}). Unpack all five picai_public_images_fold<k>.zip files.")
    return [{"train": sorted(c.case_id for c in cases if c.fold != k),
             "val": sorted(c.case_id for c in cases if c.fold == k)} for k in range(NUM_FOLDS)]


def convert_picai22(images_dir, labels_dir, dataset_id: int = 502, labels: str = "human", out=None,
                    splits: Optional[str] = None, skip_bad: bool = False, overwrite: bool = False,
                    progress: bool = True, matrix_size: Sequence[int] = MATRIX_SIZE,
                    positives_only: bool = False) -> Path:
    """Writes ``DatasetXXX_PICAI2022``; returns the dataset folder.

    Every labelled case is checked before anything is written; cases with problems are listed with their
    reasons and stop the conversion unless ``skip_bad``. The dataset appears only when complete.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from tqdm import tqdm

    if labels not in LABEL_SOURCES:
        raise TeachFormerError(f"--labels {labels!r}: choose one of {', '.join(LABEL_SOURCES)}.")
    if splits not in (None, "picai"):
        raise TeachFormerError(f"--splits {splits!r}: the only choice is picai (the official five folds).")
    if len(matrix_size) != 3 or min(matrix_size) < 1:
        raise TeachFormerError(f"matrix size {list(matrix_size)}: give three positive voxel counts (z, y, x).")
    images_dir, labels_dir = (Path(p).expanduser().resolve() for p in (images_dir, labels_dir))
    raw_root = resolve_raw_root(out)
    target = raw_root / dataset_folder_name(dataset_id, DATASET_NAME)
    found = find_cases(images_dir, labels_dir, labels)
    unlabelled = sorted(c.case_id for c in found if c.label_path is None)
    cases = [c for c in found if c.label_path is not None]
    if not cases:
        raise TeachFormerError(f"None of the {len(found)} studies under {images_dir} has a label in {labels_dir} "
                               f"(--labels {labels}).")
    with atomic_dataset_folder(raw_root, dataset_id, DATASET_NAME, overwrite=overwrite) as tmp:
        problems: Problems = {}
        for case in tqdm(cases, desc="checking PI-CAI cases", unit="case", disable=not progress):
            reasons = check_case(case)
            if reasons:
                problems[case.case_id] = reasons
        enforce_problems(problems, len(cases), skip_bad, "PI-CAI", training_left=sum(
            c.case_id not in problems and (c.positive or not positives_only) for c in cases))
        good = [c for c in cases if c.case_id not in problems]
        negatives = sorted(c.case_id for c in good if not c.positive) if positives_only else []
        good = [c for c in good if c.case_id not in negatives]
        if not good:
            raise TeachFormerError("No case with a csPCa lesion to convert (positives only).")
        if splits:
            picai_folds(good)  # fails before the long conversion when folds are missing

        for folder in ("imagesTr", "labelsTr"):
            (tmp / folder).mkdir()
        outputs, refused = {}, {}
        for case in tqdm(good, desc="converting PI-CAI cases", unit="case", disable=not progress):
            try:
                outputs[case.case_id] = convert_case(case, matrix_size, tmp)
            except AssertionError as e:
                refused[case.case_id] = [f"picai_prep refused it: {e}"]
        enforce_problems(refused, len(good), skip_bad, "PI-CAI", training_left=len(outputs))
        problems.update(refused)
        good = [c for c in good if c.case_id in outputs]

        if splits:
            (tmp / "splits_final.json").write_text(json.dumps(picai_folds(good), indent=2))
        generate_dataset_json(
            str(tmp), dict(CHANNELS), dict(LABELS), len(good), ".nii.gz", dataset_name=target.name,
            description="PI-CAI 2022 public training bpMRI (T2W, ADC, HBV), csPCa (ISUP >= 2) lesions, "
                        "preprocessed with picai_prep",
            reference="https://pi-cai.grand-challenge.org/",
            license="CC BY-NC 4.0 (PI-CAI public training and development dataset)",
            converted_by="teachformer convert picai22",
            teachformer={"source": "PI-CAI 2022 public training", "labels": labels,
                         "matrix_size_zyx": list(matrix_size), "positives_only": positives_only,
                         "folds": {c.case_id: c.fold for c in good}, "fold_source": fold_source(good),
                         "cspca_positive": sorted(c.case_id for c in good if c.positive),
                         "unlabelled": unlabelled, "negatives_left_out": negatives, "splits": splits,
                         "skipped": problems})

    print(summary(target, good, outputs, problems, unlabelled, negatives, labels))
    return target


def fold_source(cases: List[PicaiCase]) -> Optional[str]:
    """Where the folds came from: "folders", "picai_baseline", "mixed", or None when no case has a fold."""
    sources = {c.fold_source for c in cases} - {None}
    return sources.pop() if len(sources) == 1 else ("mixed" if sources else None)


def summary(target: Path, good: List[PicaiCase], outputs: Dict[str, sitk.Image], problems: Problems,
            unlabelled: List[str], negatives: List[str], labels: str) -> str:
    per_fold = Counter("-" if c.fold is None else c.fold for c in good)
    source = fold_source(good)
    lines = [
        f"Wrote {target}",
        f"  cases: {len(good)} ({sum(c.positive for c in good)} with csPCa lesions); skipped {len(problems)}"
        + (f" ({', '.join(problems)})" if problems else ""),
        f"  without a label (--labels {labels}), left out: {len(unlabelled)}",
        "  per fold" + (f" (from {source})" if source else "") + ": "
        + ", ".join(f"fold{k} {n}" if k != "-" else f"no fold {n}"
                    for k, n in sorted(per_fold.items(), key=lambda kv: str(kv[0]))),
        "  " + describe_vectors("spacing (z, y, x)", (zyx_spacing(o) for o in outputs.values()), " mm"),
        "  " + describe_vectors("shape (z, y, x)", (zyx_size(o) for o in outputs.values())),
    ]
    if negatives:
        lines.insert(3, f"  without a lesion, left out (positives only): {len(negatives)}")
    return "\n".join(lines)
