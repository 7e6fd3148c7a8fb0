"""HECKTOR 2021 (task 1: primary tumour GTVt in FDG-PET/CT) to an nnU-Net raw dataset.

Input, as the challenge distributed it (SRC may be a training folder, a test folder, a folder holding
both, or a ``hecktor_nii`` folder itself):

    hecktor2021_train/hecktor_nii/<ID>_ct.nii.gz, <ID>_pt.nii.gz, <ID>_gtvt.nii.gz
    hecktor2021_train/hecktor2021_bbox_training.csv      PatientID,x1,x2,y1,y2,z1,z2 (mm, world coordinates)
    hecktor2021_test/hecktor_nii/<ID>_ct.nii.gz, <ID>_pt.nii.gz              (no labels)
    hecktor2021_test/hecktor2021_bbox_testing.csv

Each case becomes a cube of ``crop_mm`` (default 144: the paper's 144x144x144 input) centred on the
patient's bounding box, resampled to 1 mm isotropic voxels with an identity direction. This is the grid
of the challenge's own resampling script (cubic B-spline for CT and PET, nearest neighbour for the GTVt;
first voxel centre at the cube's lower corner, so with --crop 144 the grid is exactly the challenge's).
CT and PET share that grid, so PET and labels need no separate registration step. Where the cube leaves
an image it is filled with air (-1024 HU) in CT and 0 in PET.

Output: channels ``_0000`` CT, ``_0001`` PET; labels 0 background, 1 GTVt; training cases in
imagesTr/labelsTr, test cases in imagesTs. The centre (the letters that start the patient id: CHGJ,
CHMR, CHUM, CHUS, CHUP, CHUV) of every case and the source folder (where the report finds the original CTs,
labels and boxes to score the challenge's way: ``evaluation.hecktor21``) are recorded in dataset.json, and
``splits_final.json`` (patient level; nnU-Net copies it to nnUNet_preprocessed when planning) is written on request:
``centre`` keeps every centre within one fold, ``random`` is nnU-Net's own five-fold split.
"""
import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunet_teachformer.conversion.dataset_writer import atomic_dataset_folder, dataset_folder_name, resolve_raw_root
from nnunet_teachformer.conversion.validation import (Problems, describe_vectors, enforce_problems, finite_problem,
                                                      format_box, fraction_inside, label_values_problem,
                                                      overlap_problem, physical_box, read_image, zyx_size,
                                                      zyx_spacing)
from nnunet_teachformer.errors import TeachFormerError

DATASET_NAME = "HECKTOR2021"
CHANNELS = {0: "CT", 1: "PET"}
LABELS = {"background": 0, "GTVt": 1}
CENTRES = ("CHGJ", "CHMR", "CHUM", "CHUS", "CHUP", "CHUV")
BBOX_CSVS = {"hecktor2021_bbox_training.csv": "train", "hecktor2021_bbox_testing.csv": "test"}
BBOX_COLUMNS = ("PatientID", "x1", "x2", "y1", "y2", "z1", "z2")
SPACING_MM = 1.0
DEFAULT_CROP_MM = 144  # the paper's 144x144x144 input
CT_FILL_HU = -1024
# A bounding box is "outside the image" when less than this share of its volume lies inside the CT or the
# PET: this catches boxes in the wrong coordinate system but keeps boxes that overhang an image's edge a bit.
MIN_BBOX_INSIDE = 0.5
NUM_FOLDS = 5


@dataclass
class HecktorCase:
    patient_id: str
    part: str  # "train" (labelled) or "test"
    images_dir: Path
    csv_path: Path
    bbox: Optional[np.ndarray] = None  # [[x1, y1, z1], [x2, y2, z2]] in mm
    problems: List[str] = field(default_factory=list)  # found while reading the folder and the CSV
    # "CT", "PET", "GTVt label" -> (spacing (z, y, x), physical_box), kept by check_case for the summary
    source: Dict[str, Tuple[List[float], np.ndarray]] = field(default_factory=dict)

    def path(self, suffix: str) -> Path:
        return self.images_dir / f"{self.patient_id}_{suffix}.nii.gz"

    @property
    def centre(self) -> str:
        match = re.match(r"[A-Za-z]+", self.patient_id)
        return match.group(0).upper() if match else "UNKNOWN"


def _find_parts(src: Path) -> List[Tuple[str, Path, Path]]:
    """(part, images folder, bounding-box CSV) for each challenge folder found in or at ``src``."""
    if not src.is_dir():
        raise TeachFormerError(f"{src} is not a folder: pass the unpacked HECKTOR 2021 training or test folder.")
    candidates = [src, *sorted(p for p in src.iterdir() if p.is_dir())]
    if src.name == "hecktor_nii":
        candidates.append(src.parent)
    parts = []
    for folder in candidates:
        for csv_name, part in BBOX_CSVS.items():
            if (folder / csv_name).is_file():
                images = folder / "hecktor_nii" if (folder / "hecktor_nii").is_dir() else folder
                parts.append((part, images, folder / csv_name))
    if not parts:
        raise TeachFormerError(
            f"No HECKTOR 2021 bounding-box file in {src} or its subfolders: expected "
            f"{' or '.join(BBOX_CSVS)} next to the hecktor_nii folder. Pass the unpacked challenge folder "
            f"(e.g. hecktor2021_train).")
    return parts


def _read_bboxes(csv_path: Path) -> Dict[str, Union[np.ndarray, str]]:
    """Patient id -> bounding box, or the reason its row is unusable."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in BBOX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TeachFormerError(f"{csv_path} lacks the column(s) {', '.join(missing)}: the challenge's bounding-box "
                                   f"file has the header {','.join(BBOX_COLUMNS)}.")
        boxes = {}
        for row in reader:
            try:
                box = np.array([[float(row[f"{a}1"]) for a in "xyz"], [float(row[f"{a}2"]) for a in "xyz"]])
            except (TypeError, ValueError):
                boxes[row["PatientID"]] = f"bounding box in {csv_path.name} is not numeric"
                continue
            boxes[row["PatientID"]] = box if np.all(box[1] > box[0]) else \
                f"bounding box in {csv_path.name} is empty (needs x1 < x2, y1 < y2, z1 < z2)"
    return boxes


def find_cases(src: Path) -> List[HecktorCase]:
    """Every patient named by a bounding-box CSV or an image file, with the problems seen so far."""
    cases: Dict[str, HecktorCase] = {}
    for part, images_dir, csv_path in _find_parts(src):
        boxes = _read_bboxes(csv_path)
        ids = set(boxes)
        for suffix in ("ct", "pt", "gtvt"):
            ids.update(p.name[:-len(f"_{suffix}.nii.gz")] for p in images_dir.glob(f"*_{suffix}.nii.gz"))
        for pid in sorted(ids):
            if pid in cases:
                cases[pid].problems.append(f"found twice ({cases[pid].csv_path.parent} and {csv_path.parent})")
                continue
            case = HecktorCase(pid, part, images_dir, csv_path)
            box = boxes.get(pid, f"no row in {csv_path.name}")
            if isinstance(box, str):
                case.problems.append(box)
            else:
                case.bbox = box
            cases[pid] = case
    return list(cases.values())


def check_case(case: HecktorCase) -> List[str]:
    """Every reason this case cannot be converted (empty if it can). Keeps the images' geometry on the case."""
    problems = list(case.problems)
    ct = read_image(case.path("ct"), "CT", problems)
    pet = read_image(case.path("pt"), "PET", problems)
    label = read_image(case.path("gtvt"), "GTVt label", problems) if case.part == "train" else None
    for name, suffix, image in (("CT", "ct", ct), ("PET", "pt", pet), ("GTVt label", "gtvt", label)):
        if image is not None:
            problems += finite_problem(name, image, case.path(suffix))
            case.source[name] = (zyx_spacing(image), physical_box(image))
    if label is not None:
        problems += label_values_problem("GTVt label", label, list(LABELS.values()))
        if ct is not None:
            problems += overlap_problem("GTVt label", label, "CT", ct)
    if ct is not None and pet is not None:
        problems += overlap_problem("PET", pet, "CT", ct)
    if case.bbox is not None:
        for name in ("CT", "PET"):
            if name not in case.source:
                continue
            box = case.source[name][1]
            inside = fraction_inside(case.bbox, box)
            if inside < MIN_BBOX_INSIDE:
                problems.append(f"bounding box ({format_box(case.bbox)}) lies outside the {name} "
                                f"({inside:.0%} of it inside; {name}: {format_box(box)})")
    return problems


def crop_grid(bbox: np.ndarray, crop_mm: float) -> Tuple[np.ndarray, int]:
    """(origin in mm, voxels per axis) of the 1 mm cube of edge ``crop_mm`` centred on the bounding box."""
    return bbox.mean(axis=0) - crop_mm / 2.0, int(round(crop_mm / SPACING_MM))


def _region_for(image: sitk.Image, origin: np.ndarray, size: int) -> sitk.Image:
    """The part of ``image`` the output cube needs, plus a B-spline margin: resampling a whole CT
    (often 512x512x300) would compute spline coefficients for every voxel of it."""
    edges = [(o - SPACING_MM, o + size * SPACING_MM) for o in origin]
    corners = np.array([image.TransformPhysicalPointToContinuousIndex(c) for c in np.array(np.meshgrid(*edges))
                        .reshape(3, -1).T])
    lo = np.clip(np.floor(corners.min(axis=0)).astype(int) - 3, 0, None)
    hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 4, image.GetSize())
    if np.any(hi <= lo):
        return image
    (x0, y0, z0), (x1, y1, z1) = lo.tolist(), hi.tolist()
    return image[x0:x1, y0:y1, z0:z1]


def resample_to_cube(image: sitk.Image, origin: np.ndarray, size: int, interpolator: int, fill: float,
                     pixel_type: int) -> sitk.Image:
    return sitk.Resample(_region_for(image, origin, size), [size] * 3, sitk.Transform(), interpolator,
                         [float(o) for o in origin], [SPACING_MM] * 3, [1, 0, 0, 0, 1, 0, 0, 0, 1], fill, pixel_type)


def convert_case(case: HecktorCase, crop_mm: float, out: Path) -> sitk.Image:
    """Writes the case's channels (and label) under ``out``; returns the output CT."""
    origin, size = crop_grid(case.bbox, crop_mm)
    images_dir = out / ("imagesTr" if case.part == "train" else "imagesTs")
    ct = sitk.ReadImage(str(case.path("ct")))
    ct_out = resample_to_cube(ct, origin, size, sitk.sitkBSpline, CT_FILL_HU, ct.GetPixelID())
    sitk.WriteImage(ct_out, str(images_dir / f"{case.patient_id}_0000.nii.gz"), useCompression=True)
    pet = resample_to_cube(sitk.ReadImage(str(case.path("pt"))), origin, size, sitk.sitkBSpline, 0.0,
                           sitk.sitkFloat32)
    sitk.WriteImage(pet, str(images_dir / f"{case.patient_id}_0001.nii.gz"), useCompression=True)
    if case.part == "train":
        label = resample_to_cube(sitk.ReadImage(str(case.path("gtvt"))), origin, size, sitk.sitkNearestNeighbor,
                                 0, sitk.sitkUInt8)
        sitk.WriteImage(label, str(out / "labelsTr" / f"{case.patient_id}.nii.gz"), useCompression=True)
    return ct_out


def centre_splits(centres: Dict[str, str]) -> List[Dict[str, List[str]]]:
    """Folds in which every centre is wholly in train or wholly in val: with the five training centres of
    HECKTOR 2021 this is leave-one-centre-out. More centres than folds are packed greedily, largest first."""
    by_centre: Dict[str, List[str]] = {}
    for case, centre in sorted(centres.items()):
        by_centre.setdefault(centre, []).append(case)
    if len(by_centre) < 2:
        raise TeachFormerError(f"--splits centre needs training cases from at least two centres; found only "
                               f"{', '.join(by_centre) or 'none'}. Use --splits random.")
    folds: List[List[str]] = [[] for _ in range(min(NUM_FOLDS, len(by_centre)))]
    for centre in sorted(by_centre, key=lambda c: (-len(by_centre[c]), c)):
        min(folds, key=len).extend(by_centre[centre])
    return [{"train": sorted(c for j, fold in enumerate(folds) if j != i for c in fold), "val": sorted(folds[i])}
            for i in range(len(folds))]


def random_splits(centres: Dict[str, str]) -> List[Dict[str, List[str]]]:
    """nnU-Net's own default split of the cases (five folds, seed 12345). HECKTOR has one study per patient,
    so this is patient level."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    cases = sorted(centres)
    if len(cases) < NUM_FOLDS:
        raise TeachFormerError(f"--splits random needs at least {NUM_FOLDS} training cases, got {len(cases)}.")
    return [{k: [str(c) for c in v] for k, v in fold.items()}
            for fold in generate_crossval_split(cases, seed=12345, n_splits=NUM_FOLDS)]


SPLIT_MAKERS = {"centre": centre_splits, "random": random_splits}  # case -> centre of the training cases


def convert_hecktor21(src, dataset_id: int = 501, crop_mm: float = DEFAULT_CROP_MM, out=None, splits: Optional[str] = None,
                      skip_bad: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Writes ``DatasetXXX_HECKTOR2021`` from the challenge folder(s) at ``src``; returns the dataset folder.

    Every case is checked before anything is written; cases with problems are listed with their reasons and
    stop the conversion unless ``skip_bad``. The dataset appears only when complete (see dataset_writer).
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from tqdm import tqdm

    if splits not in (None, *SPLIT_MAKERS):
        raise TeachFormerError(f"--splits {splits!r}: choose one of {', '.join(SPLIT_MAKERS)}.")
    if not crop_mm >= 8 * SPACING_MM:
        raise TeachFormerError(f"--crop {crop_mm}: the cube edge must be at least 8 mm (the paper uses 144).")
    src = Path(src).expanduser().resolve()
    raw_root = resolve_raw_root(out)
    target = raw_root / dataset_folder_name(dataset_id, DATASET_NAME)
    cases = find_cases(src)
    with atomic_dataset_folder(raw_root, dataset_id, DATASET_NAME, overwrite=overwrite) as tmp:
        problems: Problems = {}
        for case in tqdm(cases, desc="checking HECKTOR 2021 cases", unit="case", disable=not progress):
            reasons = check_case(case)
            if reasons:
                problems[case.patient_id] = reasons
        skipped_training = any(c.part == "train" for c in cases if c.patient_id in problems)
        training_left = sum(c.part == "train" for c in cases if c.patient_id not in problems)
        enforce_problems(problems, len(cases), skip_bad, "HECKTOR 2021",
                         training_left=training_left if skipped_training else None)
        good = [c for c in cases if c.patient_id not in problems]
        train = [c for c in good if c.part == "train"]
        if splits and not train:
            raise TeachFormerError(f"--splits {splits} needs training cases, but {src} holds only the test set.")
        folds = SPLIT_MAKERS[splits]({c.patient_id: c.centre for c in train}) if splits else None

        for folder in ("imagesTr", "labelsTr") + (("imagesTs",) if len(train) < len(good) else ()):
            (tmp / folder).mkdir()
        outputs = {}
        for case in tqdm(good, desc="converting HECKTOR 2021 cases", unit="case", disable=not progress):
            outputs[case.patient_id] = convert_case(case, crop_mm, tmp)

        centres = {c.patient_id: c.centre for c in good}
        if folds:
            (tmp / "splits_final.json").write_text(json.dumps(folds, indent=2))
        generate_dataset_json(
            str(tmp), dict(CHANNELS), dict(LABELS), len(train), ".nii.gz", dataset_name=target.name,
            description="HECKTOR 2021 task 1 (GTVt) PET/CT, cropped around the challenge bounding boxes",
            reference="https://www.aicrowd.com/challenges/miccai-2021-hecktor",
            license="HECKTOR 2021 data use agreement (see the challenge website)",
            converted_by="teachformer convert hecktor21",
            teachformer={"source": "HECKTOR 2021", "source_folder": str(src), "crop_mm": crop_mm, "spacing_mm": [SPACING_MM] * 3,
                         "centres": centres, "test_cases": sorted(c.patient_id for c in good if c.part == "test"),
                         "splits": splits, "skipped": problems})

    print(summary(target, good, outputs, problems, crop_mm))
    return target


def summary(target: Path, good: List[HecktorCase], outputs: Dict[str, sitk.Image], problems: Problems,
            crop_mm: float) -> str:
    train = [c for c in good if c.part == "train"]
    padded = []
    for case in good:
        origin, size = crop_grid(case.bbox, crop_mm)
        cube = np.stack([origin - SPACING_MM / 2, origin + (size - 0.5) * SPACING_MM])
        if fraction_inside(cube, case.source["CT"][1]) < 1.0:
            padded.append(case.patient_id)
    per_centre = ", ".join(f"{centre} {sum(c.centre == centre for c in good)}"
                           for centre in sorted({c.centre for c in good}))
    return "\n".join([
        f"Wrote {target}",
        f"  cases: {len(train)} training (imagesTr/labelsTr), {len(good) - len(train)} test (imagesTs); "
        f"skipped {len(problems)}" + (f" ({', '.join(problems)})" if problems else ""),
        f"  centres: {per_centre}",
        "  " + describe_vectors("spacing (z, y, x)", (zyx_spacing(o) for o in outputs.values()), " mm"),
        "  " + describe_vectors("shape (z, y, x)", (zyx_size(o) for o in outputs.values())),
        "  " + describe_vectors("source CT spacing (z, y, x)", (c.source["CT"][0] for c in good), " mm"),
        "  " + describe_vectors("source PET spacing (z, y, x)", (c.source["PET"][0] for c in good), " mm"),
    ] + ([f"  the {crop_mm:g} mm cube reaches beyond the CT (filled with {CT_FILL_HU} HU) in {len(padded)} cases: "
          f"{', '.join(sorted(padded))}"] if padded else []))
