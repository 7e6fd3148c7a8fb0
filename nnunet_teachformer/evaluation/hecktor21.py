"""HECKTOR 2021 task 1 scored as the challenge scored it: on the original CT grid, inside each patient's box.

Our predictions live on the converter's 1 mm crop (``conversion.hecktor21``); the challenge wanted them on the
original CT grid. So each prediction goes back there first (nearest neighbour; ``--resampled-out`` writes it,
the submission format). Then, as the challenge's evaluator (voreille/hecktor, ``aicrowd_evaluator``) does,
the reference GTVt and the prediction are resampled with nearest neighbour onto the grid that has the
label's spacing and direction, starts at the box's lower corner (x1, y1, z1) and spans
round((x2 - x1) / spacing) voxels per axis, and each case is scored there:

- DSC; an empty prediction scores DSC 0 (and HD95 0, recall 0, precision 0, as the evaluator does;
  ``empty`` counts them so a reader can see how much that flatters the median HD95);
- HD95, the symmetric 95th-percentile Hausdorff distance in mm (MONAI's, on the box grid's spacing);
- recall and precision.

The challenge's figures are the mean DSC and the median HD95 over the cases. Differences from the official
evaluator: it measures HD95 with DeepMind's surface-distance (surface elements weighted by area) and passes
the spacing in (x, y, z) order to (z, y, x) arrays; we pass it in array order. With the challenge's
thick-slice CTs the HD95 values can therefore differ; DSC, recall and precision are the same computation.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_teachformer.conversion.hecktor21 import DEFAULT_CROP_MM, SPACING_MM, crop_grid, find_cases
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation.metrics import hd95_of_masks
from nnunet_teachformer.nnunet_paths import check_not_raw_data, check_writable, refuse_replacing

SUFFIX = ".nii.gz"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# a fractional --crop (e.g. 144.5) rounds to whole voxels, moving the cube's origin by up to a quarter voxel
ORIGIN_TOLERANCE_MM = 0.25 + 1e-3


@dataclass
class CaseScore:
    case: str
    dsc: float
    hd95: float
    recall: float
    precision: float
    empty: bool


@dataclass
class HecktorScores:
    cases: List[CaseScore] = field(default_factory=list)

    @property
    def mean_dsc(self) -> float:
        return float(np.mean([c.dsc for c in self.cases]))

    @property
    def median_hd95(self) -> float:
        return float(np.median([c.hd95 for c in self.cases]))

    @property
    def empty(self) -> int:
        return sum(c.empty for c in self.cases)

    def table(self) -> str:
        lines = ["| Case | DSC | HD95 (mm) | Recall | Precision |", "|---|---|---|---|---|"]
        lines += [f"| {c.case}{' (empty)' if c.empty else ''} | {c.dsc:.4f} | {c.hd95:.2f} | {c.recall:.4f} | "
                  f"{c.precision:.4f} |" for c in self.cases]
        lines.append(f"\nHECKTOR 2021 protocol, {len(self.cases)} cases: mean DSC {self.mean_dsc:.4f}, median HD95 "
                     f"{self.median_hd95:.2f} mm" + (f"; {self.empty} empty prediction(s) scored DSC 0, HD95 0"
                                                       if self.empty else ""))
        return "\n".join(lines)


def box_grid(reference: sitk.Image, bbox: np.ndarray) -> sitk.Image:
    """An empty image on the evaluator's grid: ``reference``'s spacing and direction, origin at the box's lower
    corner, round(box edge / spacing) voxels per axis."""
    spacing = np.array(reference.GetSpacing())
    size = [int(n) for n in np.round((bbox[1] - bbox[0]) / spacing)]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(reference.GetSpacing())
    grid.SetDirection(reference.GetDirection())
    grid.SetOrigin([float(o) for o in bbox[0]])
    return grid


def _on(grid: sitk.Image, image: sitk.Image) -> np.ndarray:
    """``image`` resampled onto ``grid`` by nearest neighbour (0 outside it), as a (z, y, x) boolean array."""
    resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(resampled) > 0


def to_grid(prediction: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """``prediction`` resampled back onto ``grid`` (an original CT's) by nearest neighbour, 0 outside the crop."""
    return sitk.Resample(prediction, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def score_case(case: str, prediction: sitk.Image, reference: sitk.Image, bbox: np.ndarray) -> CaseScore:
    """``prediction`` (any grid) back on ``reference``'s grid first, as a submission is, then both on the box grid.
    Going back first keeps a prediction equal to the converted label (almost) equal to the reference: an
    original voxel's nearest 1 mm voxel took its value from that same original voxel wherever the original
    spacing is at least 1 mm (slices; a 0.98 mm axis may shift a boundary voxel)."""
    grid = box_grid(reference, bbox)
    pred, ref = _on(grid, to_grid(prediction, reference)), _on(grid, reference)
    if not pred.any():
        return CaseScore(case, 0.0, 0.0, 0.0, 0.0, empty=True)
    tp = np.logical_and(pred, ref).sum()
    dsc = 2 * tp / (pred.sum() + ref.sum())
    recall = tp / ref.sum() if ref.any() else math.nan
    distance = hd95_of_masks(pred, ref, grid.GetSpacing()[::-1]) if ref.any() else math.inf
    return CaseScore(case, float(dsc), distance, float(recall), float(tp / pred.sum()), empty=False)


def evaluate_hecktor21(predictions, source, resampled_out=None, overwrite: bool = False) -> HecktorScores:
    """Scores every ``<PatientID>.nii.gz`` in the folder ``predictions`` (see ``score_files``)."""
    predictions = Path(predictions)
    if not predictions.is_dir():
        raise TeachFormerError(f"--predictions {predictions} is not a folder of <PatientID>.nii.gz segmentations.")
    files = sorted(predictions.glob(f"*{SUFFIX}"))
    if not files:
        raise TeachFormerError(f"no {SUFFIX} segmentation in {predictions}: give the folder that nnUNetv2_predict or "
                               f"teachformer predict wrote (or a model's fold_X/validation folder).")
    return score_files(files, source, resampled_out, overwrite)


def score_files(files: Sequence[Path], source, resampled_out=None, overwrite: bool = False) -> HecktorScores:
    """Scores the ``<PatientID>.nii.gz`` ``files`` against the challenge folder ``source`` (the unpacked training
    folder: hecktor_nii/ with the GTVt labels and the bounding-box CSV). With ``resampled_out``, also writes each
    prediction on its original CT grid (the challenge's submission format); files of the same names there are
    replaced only with ``overwrite``."""
    source = Path(source)
    cases = {c.patient_id: c for c in find_cases(source)}
    problems = []
    for f in files:
        case = cases.get(f.name[:-len(SUFFIX)])
        if case is None:
            problems.append(f"{f.name}: no such patient in {source}")
        elif case.bbox is None:
            problems.append(f"{f.name}: {'; '.join(case.problems)}")
        elif not case.path("gtvt").is_file():
            problems.append(f"{f.name}: no reference label {case.path('gtvt')} (test cases have none)")
        else:
            problems += [f"{f}: {p}" for p in _crop_grid_problem(f, case.bbox)]
    if problems:
        raise TeachFormerError(f"{len(problems)} of {len(files)} predictions cannot be scored against {source}:\n  "
                               + "\n  ".join(problems) + "\nPass the challenge's training folder that the dataset "
                               "was converted from (the one with hecktor2021_bbox_training.csv) and the segmentations "
                               "nnU-Net predicted for that converted dataset, or remove these files.")
    if resampled_out is not None:
        check_not_raw_data(resampled_out, "--resampled-out")
        refuse_replacing([Path(resampled_out) / f.name for f in files], overwrite, "--resampled-out")
        check_writable(resampled_out, "Give --resampled-out a folder you can write.")
        Path(resampled_out).mkdir(parents=True, exist_ok=True)
    scores = HecktorScores()
    for f in sorted(files, key=lambda f: f.name):
        case = cases[f.name[:-len(SUFFIX)]]
        prediction, reference = sitk.ReadImage(str(f)), sitk.ReadImage(str(case.path("gtvt")))
        scores.cases.append(score_case(case.patient_id, prediction, reference, case.bbox))
        if resampled_out is not None:
            back = to_grid(prediction, _header(case.path("ct")))
            sitk.WriteImage(back, str(Path(resampled_out) / f.name), useCompression=True)
    return scores


def _crop_grid_problem(path: Path, bbox: np.ndarray) -> List[str]:
    """Why the prediction at ``path`` is not on the converter's 1 mm crop grid of its case (empty if it is).
    Scored anyway it would land beside the tumour (DSC 0). The cube's edge is read from the prediction, so any
    --crop passes; a prediction that is no cube is compared with the default cube."""
    try:
        prediction = _header(path)
    except RuntimeError as e:
        return [f"cannot be read ({str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__})"]
    size = prediction.GetSize()
    origin, edge = crop_grid(bbox, size[0] if len(set(size)) == 1 else DEFAULT_CROP_MM)
    expected = sitk.Image([edge] * 3, sitk.sitkUInt8)
    expected.SetOrigin([float(o) for o in origin])
    expected.SetSpacing([SPACING_MM] * 3)
    if (size == expected.GetSize() and np.allclose(prediction.GetSpacing(), SPACING_MM, atol=1e-3)
            and np.allclose(prediction.GetDirection(), IDENTITY, atol=1e-3)
            and np.abs(np.subtract(prediction.GetOrigin(), origin)).max() <= ORIGIN_TOLERANCE_MM):
        return []
    return [f"its grid is {_describe_grid(prediction)}, not the converted {SPACING_MM:g} mm crop grid of this case, "
            f"{_describe_grid(expected)} (with another --crop: a cube of that edge, same centre). Predict it from the "
            f"converted image (nnUNetv2_predict keeps its grid), or copy the header of imagesTr/"
            f"{path.name[:-len(SUFFIX)]}_0000{SUFFIX} into it"]


def _describe_grid(image: sitk.Image) -> str:
    xyz = lambda values: ", ".join(f"{v:g}" for v in np.round(values, 2))  # noqa: E731
    spacing = " x ".join(f"{s:g}" for s in np.round(image.GetSpacing(), 3))
    tilted = not np.allclose(image.GetDirection(), IDENTITY, atol=1e-3)
    return (f"{' x '.join(map(str, image.GetSize()))} voxels of {spacing} mm from origin ({xyz(image.GetOrigin())}) "
            f"mm" + (f", direction ({xyz(image.GetDirection())})" if tilted else ""))


def _header(path: Path) -> sitk.Image:
    """An empty image with the geometry of the file at ``path`` (its voxels are not read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    image = sitk.Image(reader.GetSize(), sitk.sitkUInt8)
    image.SetSpacing(reader.GetSpacing())
    image.SetOrigin(reader.GetOrigin())
    image.SetDirection(reader.GetDirection())
    return image
