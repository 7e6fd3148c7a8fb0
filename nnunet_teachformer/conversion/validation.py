"""Case checks and reports shared by the HECKTOR 2021 and PI-CAI 2022 converters.

A converter checks every case before it writes any (modalities present and readable, pixel values finite,
label values known, modalities overlapping in physical space), lists each case with a problem and its
reasons, and stops unless the user asked to skip the bad cases. After writing it prints a summary: cases
written and skipped, output spacing and shape statistics. Sizes and spacings are reported in (z, y, x)
order, like nnU-Net's plans.
"""
import gzip
import itertools
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_teachformer.errors import TeachFormerError

Problems = Dict[str, List[str]]  # case id -> reasons, in the order the cases were checked
CROSS_VALIDATION_FOLDS = 5


def gzip_problem(path) -> Optional[str]:
    """Why the .gz file ``path`` cannot be decompressed completely, or None. A truncated file (an interrupted
    download or copy) matters most: ITK's NIfTI reader reads it without complaint, the missing voxels as zeros."""
    if not str(path).endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except EOFError:
        return "the file ends before its compressed data does (an interrupted download or copy?)"
    except (gzip.BadGzipFile, zlib.error) as e:
        return f"it is not valid gzip data although it ends in .gz ({e})"
    return None


def read_image(path: Path, what: str, problems: List[str]) -> Optional[sitk.Image]:
    """The image at ``path``, or None with 'missing/damaged/unreadable <what> (path)' added to ``problems``."""
    if not path.is_file():
        problems.append(f"missing {what} ({path})")
        return None
    damage = gzip_problem(path)
    if damage:
        problems.append(f"damaged {what} ({path}): {damage}")
        return None
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        problems.append(f"unreadable {what} ({path}): {detail}")
        return None


def physical_box(image: sitk.Image) -> np.ndarray:
    """[[x, y, z] min, [x, y, z] max] in mm (world coordinates) of the space the voxels cover, edges included."""
    edges = [(-0.5, n - 0.5) for n in image.GetSize()]
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint(c) for c in itertools.product(*edges)])
    return np.stack([corners.min(axis=0), corners.max(axis=0)])


def fraction_inside(box: np.ndarray, container: np.ndarray) -> float:
    """Share of the volume of ``box`` that lies inside ``container`` (both as returned by physical_box)."""
    overlap = np.clip(np.minimum(box[1], container[1]) - np.maximum(box[0], container[0]), 0, None)
    return float(np.prod(overlap) / np.prod(box[1] - box[0]))


def format_box(box: np.ndarray) -> str:
    return "x {:.0f}..{:.0f}, y {:.0f}..{:.0f}, z {:.0f}..{:.0f} mm".format(*box.T.ravel())


def overlap_problem(name: str, image: sitk.Image, reference_name: str, reference: sitk.Image) -> List[str]:
    """A reason when ``image`` and ``reference`` share no volume in physical space."""
    box, ref_box = physical_box(image), physical_box(reference)
    if fraction_inside(box, ref_box) > 0:
        return []
    return [f"{name} and {reference_name} do not overlap in physical space ({name}: {format_box(box)}; "
            f"{reference_name}: {format_box(ref_box)}); check the file's origin and direction"]


ORIGIN_TOLERANCE_VOXELS = 0.1
DIRECTION_TOLERANCE = 1e-3  # direction cosines; about 0.06 degrees


def _xyz(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in np.round(values, 3)) + ")"


def grid_problem(name: str, image: sitk.Image, reference_name: str, reference: sitk.Image) -> List[str]:
    """A reason when ``image`` is not on ``reference``'s voxel grid. nnU-Net pairs the voxels of a case's files
    by index, so any difference misplaces every voxel. Size and spacing are compared as strictly as nnU-Net
    compares them (it refuses a difference without naming the file); origin and direction, which it only warns
    about, within a tenth of a voxel and 1e-3 (rounding in the files' headers). Sizes etc. in (x, y, z) order."""
    differences = []
    if image.GetSize() != reference.GetSize():
        differences.append(f"size {_xyz(image.GetSize())} vs {_xyz(reference.GetSize())} voxels")
    if image.GetDimension() == reference.GetDimension():
        if not np.allclose(image.GetSpacing(), reference.GetSpacing()):
            differences.append(f"spacing {_xyz(image.GetSpacing())} vs {_xyz(reference.GetSpacing())} mm")
        offset = reference.TransformPhysicalPointToContinuousIndex(image.GetOrigin())
        if np.abs(offset).max() > ORIGIN_TOLERANCE_VOXELS:
            differences.append(f"origin {_xyz(image.GetOrigin())} vs {_xyz(reference.GetOrigin())} mm")
        if not np.allclose(image.GetDirection(), reference.GetDirection(), rtol=0, atol=DIRECTION_TOLERANCE):
            differences.append(f"direction {_xyz(image.GetDirection())} vs {_xyz(reference.GetDirection())}")
    if not differences:
        return []
    return [f"{name} is not on the voxel grid of {reference_name}: {', '.join(differences)}"]


def finite_problem(name: str, image: sitk.Image, path: Path) -> List[str]:
    """A reason when a floating-point image (read from ``path``) holds NaN or infinite values."""
    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.floating):
        return []
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel

        # SimpleITK's NIfTI reader silently turns NaN and inf into 0, so look at the stored values
        array = np.asanyarray(nibabel.load(str(path)).dataobj)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    return [f"{name} has {bad} NaN or infinite voxels"] if bad else []


def label_values_problem(name: str, image: sitk.Image, allowed: Sequence[int]) -> List[str]:
    """A reason when the label holds values outside ``allowed``."""
    array = sitk.GetArrayViewFromImage(image)
    unknown = ~np.isin(array, allowed)
    if not unknown.any():
        return []
    found = np.unique(array[unknown])
    shown = ", ".join(f"{v:g}" for v in found[:5]) + (", ..." if len(found) > 5 else "")
    return [f"{name} has unknown values {shown} (allowed: {', '.join(map(str, allowed))})"]


def format_problems(problems: Problems) -> str:
    return "\n".join(f"  {case}: " + "; ".join(reasons) for case, reasons in problems.items())


def enforce_problems(problems: Problems, num_cases: int, skip_bad: bool, what: str,
                     training_left: Optional[int] = None) -> None:
    """Stops the conversion when a case has a problem, unless ``skip_bad``; then lists the cases left out.
    With ``training_left`` (the training cases that skipping leaves), also stops when they are fewer than
    nnU-Net's five-fold cross-validation needs (its default split is a KFold of 5, which fails on fewer)."""
    if not problems:
        return
    listing = format_problems(problems)
    if len(problems) == num_cases:
        raise TeachFormerError(f"All {num_cases} {what} cases have problems, nothing was written:\n{listing}")
    if not skip_bad:
        raise TeachFormerError(
            f"{len(problems)} of {num_cases} {what} cases have problems, so nothing was written:\n{listing}\n"
            f"Fix or remove these cases, or pass --skip-bad to convert the other {num_cases - len(problems)}.")
    if training_left is not None and training_left < CROSS_VALIDATION_FOLDS:
        raise TeachFormerError(
            f"--skip-bad would leave {training_left} {what} training case(s), fewer than the "
            f"{CROSS_VALIDATION_FOLDS} that nnU-Net's five-fold cross-validation needs, so nothing was written. "
            f"Skipped {len(problems)} of {num_cases}:\n{listing}\nFix the skipped cases (or add cases) and convert "
            f"again.")
    print(f"Skipping {len(problems)} of {num_cases} {what} cases (--skip-bad):\n{listing}")


def describe_vectors(name: str, vectors: Iterable[Sequence[float]], unit: str = "") -> str:
    """'name: a x b x c (all N cases)' or 'name: median a x b x c, min ..., max ...' (per axis)."""
    values = np.array(list(vectors), dtype=float)
    if len(values) == 0:
        return f"{name}: -"
    fmt = lambda v: " x ".join(f"{x:g}" for x in np.round(v, 3))  # noqa: E731
    if np.allclose(values, values[0]):
        return f"{name}: {fmt(values[0])}{unit} (all {len(values)} cases)"
    return (f"{name}: median {fmt(np.median(values, axis=0))}{unit}, min {fmt(values.min(axis=0))}, "
            f"max {fmt(values.max(axis=0))}")


def zyx_size(image: sitk.Image) -> List[int]:
    return list(reversed(image.GetSize()))


def zyx_spacing(image: sitk.Image) -> List[float]:
    return list(reversed(image.GetSpacing()))
