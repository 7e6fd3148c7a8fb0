"""Synthetic PET/CT head-and-neck phantom: the embedded default dataset of the demo and the tests.

Built so that neither modality alone solves the task, which makes it a fair test of multimodal
learning and of what teachers can pass on:

* CT: a body (soft tissue ~40 HU with texture, a fat rim, air outside), a spine and jaw bones
  (~700 HU). Tumours (label 1, GTVp) and lymph nodes (label 2, GTVn) are slightly denser than tissue
  with sharp edges, so their exact boundary is visible in CT only (after denoising). But cysts and
  vessels have the same density and are not tumour.
* PET: tumours and nodes are hot (SUV 5-11 and 3-6), but the PET image is blurred by the scanner's
  point-spread function (partial-volume effect), so its boundary is fuzzy; physiological uptake
  (a brain-like region, glands, muscle) is hot with no CT change and is not tumour.
* Noise in both, partial-volume blur, and an optional anisotropic voxel spacing; the physical field
  of view stays the same, so a coarser axis has fewer voxels.

Everything is deterministic for a given seed and case index.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunet_teachformer.conversion.dataset_writer import atomic_dataset_folder, dataset_folder_name, resolve_raw_root
from nnunet_teachformer.errors import TeachFormerError

CHANNELS = {0: "CT", 1: "PET"}
LABELS = {"background": 0, "GTVp": 1, "GTVn": 2}
CASE_PREFIX = "PHANTOM"

TISSUE_HU, FAT_HU, BONE_HU, AIR_HU = 40.0, -100.0, 700.0, -1000.0
LESION_HU = 75.0  # tumours, nodes, and the cysts/vessels that mimic them in CT
CT_NOISE_HU = 15.0
PET_PSF_MM = 3.0  # Gaussian sigma of the PET point-spread function, in mm


@dataclass(frozen=True)
class PhantomSpec:
    size: int = 48  # voxels per axis at 1 mm; the field of view is size mm on every axis
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)  # (z, y, x) in mm

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(max(8, int(round(self.size / s))) for s in self.spacing)


def _grid(spec: PhantomSpec):
    """Normalised physical coordinates in [-1, 1] per axis, (z, y, x)."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in spec.shape]
    return np.meshgrid(*axes, indexing="ij")


def _ellipsoid(z, y, x, centre, radii) -> np.ndarray:
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + \
        ((x - centre[2]) / radii[2]) ** 2 <= 1.0


def _random_point(rng, inside: np.ndarray, z, y, x, margin: float, avoid: np.ndarray) -> Tuple[float, float, float]:
    """A random point well inside ``inside`` and away from ``avoid`` (tries the erosion implied by ``margin``)."""
    ok = inside & ~avoid
    for _ in range(200):
        c = rng.uniform(-1 + margin, 1 - margin, size=3)
        idx = tuple(int(round((ci + 1) / 2 * (n - 1))) for ci, n in zip(c, inside.shape))
        if ok[idx]:
            return tuple(float(v) for v in c)
    raise RuntimeError("could not place a structure inside the phantom body")


def make_case(rng: np.random.Generator, spec: PhantomSpec):
    """Returns (ct [HU, int16], pet [SUV, float32], label [uint8]) arrays in (z, y, x) order."""
    z, y, x = _grid(spec)
    sigma_vox = lambda mm: tuple(mm / s for s in spec.spacing)  # noqa: E731

    body = _ellipsoid(z, y, x, (0, 0, 0), (0.95, 0.8 + rng.uniform(-0.05, 0.05), 0.75 + rng.uniform(-0.05, 0.05)))
    inner = _ellipsoid(z, y, x, (0, 0, 0), (0.95, 0.72, 0.67))
    spine = _ellipsoid(z, y, x, (0, 0.45, 0), (2.0, 0.14, 0.14)) & body
    jaw = (_ellipsoid(z, y, x, (-0.35, -0.35, 0), (0.12, 0.5, 0.6)) &
           ~_ellipsoid(z, y, x, (-0.35, -0.35, 0), (0.2, 0.4, 0.5)) & (y < -0.2) & body)
    bone = spine | jaw

    label = np.zeros(spec.shape, np.uint8)
    taken = bone.copy()
    # primary tumour: union of 2-3 overlapping ellipsoids -> irregular outline
    cz, cy, cx = _random_point(rng, inner, z, y, x, 0.45, taken | (np.abs(x) > 0.3) | (z > 0.3))
    tumour = np.zeros(spec.shape, bool)
    for _ in range(rng.integers(2, 4)):
        offset = rng.normal(0, 0.07, size=3)
        radii = rng.uniform(0.15, 0.27, size=3)
        tumour |= _ellipsoid(z, y, x, (cz + offset[0], cy + offset[1], cx + offset[2]), radii)
    tumour &= inner & ~bone
    label[tumour] = 1
    taken |= _ellipsoid(z, y, x, (cz, cy, cx), (0.4, 0.4, 0.4))
    # lymph nodes: lateral, small, round; at least one per case, so that nnU-Net's per-label Dice is defined
    for _ in range(rng.integers(1, 3)):
        side = rng.choice([-1.0, 1.0])
        c = (rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.3), side * rng.uniform(0.4, 0.55))
        node = _ellipsoid(z, y, x, c, rng.uniform(0.09, 0.14, size=3)) & inner & ~taken
        label[node] = 2
        taken |= _ellipsoid(z, y, x, c, (0.2, 0.2, 0.2))
    # CT look-alikes that are not lesions (cysts, vessels): dense in CT, cold in PET
    mimics = np.zeros(spec.shape, bool)
    for _ in range(rng.integers(1, 3)):
        c = _random_point(rng, inner, z, y, x, 0.3, taken)
        mimics |= _ellipsoid(z, y, x, c, rng.uniform(0.06, 0.12, size=3)) & inner & ~taken
    mimics |= _ellipsoid(z, y, x, (0, 0.1, 0.3 * rng.choice([-1, 1])), (2.0, 0.05, 0.05)) & inner & ~taken
    # PET look-alikes (physiological uptake): hot in PET, no CT change
    brain = _ellipsoid(z, y, x, (0.85, 0, 0), (0.35, 0.5, 0.5)) & body
    glands = np.zeros(spec.shape, bool)
    for _ in range(rng.integers(1, 3)):
        c = _random_point(rng, inner, z, y, x, 0.3, taken | mimics)
        glands |= _ellipsoid(z, y, x, c, rng.uniform(0.06, 0.12, size=3)) & inner

    # CT
    texture = gaussian_filter(rng.normal(0, 1, spec.shape).astype(np.float32), sigma_vox(4.0)) * 40
    ct = np.full(spec.shape, AIR_HU, np.float32)
    ct[body] = FAT_HU
    ct[inner] = TISSUE_HU + texture[inner]
    ct[bone] = BONE_HU + 0.5 * texture[bone]
    lesion_ct = (label > 0) | mimics
    ct[lesion_ct] = LESION_HU + 0.3 * texture[lesion_ct]
    ct = gaussian_filter(ct, sigma_vox(0.6))  # partial volume at the scanner's resolution
    ct += rng.normal(0, CT_NOISE_HU, spec.shape)

    # PET (SUV)
    pet = np.zeros(spec.shape, np.float32)
    pet[body] = 0.8
    pet[inner] = 1.2
    pet[bone] = 0.5
    pet[brain] = rng.uniform(6, 9)
    pet[glands] = rng.uniform(4, 8)
    pet[label == 1] = rng.uniform(5, 11) * (1 + 0.15 * texture[label == 1] / 40)
    pet[label == 2] = rng.uniform(3, 6)
    pet = gaussian_filter(pet, sigma_vox(PET_PSF_MM))
    pet *= rng.normal(1.0, 0.1, spec.shape).astype(np.float32)
    pet += np.abs(rng.normal(0, 0.05, spec.shape))
    pet = np.clip(pet, 0, None)

    return np.clip(np.round(ct), -1024, 3071).astype(np.int16), pet.astype(np.float32), label


def _write(array: np.ndarray, spacing_zyx: Sequence[float], path: Path):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(image, str(path), useCompression=True)


def write_case(rng, spec: PhantomSpec, images_dir: Path, labels_dir: Path, case_id: str):
    ct, pet, label = make_case(rng, spec)
    _write(ct, spec.spacing, images_dir / f"{case_id}_0000.nii.gz")
    _write(pet, spec.spacing, images_dir / f"{case_id}_0001.nii.gz")
    _write(label, spec.spacing, labels_dir / f"{case_id}.nii.gz")


def convert_synthetic(dataset_id: int, num_cases: int, size: int = 48, seed: int = 0,
                      spacing: Sequence[float] = (1.0, 1.0, 1.0), num_test_cases: int = 0,
                      out: Optional[str] = None, overwrite: bool = False, name: str = "TeachFormerPhantom",
                      progress: bool = True) -> Path:
    """Writes ``DatasetXXX_<name>`` with ``num_cases`` training cases (imagesTr/labelsTr) and
    ``num_test_cases`` held-out cases (imagesTs/labelsTs). Returns the dataset folder."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from tqdm import tqdm

    if num_cases < 5:
        raise TeachFormerError(f"--cases {num_cases}: nnU-Net's five-fold cross-validation needs at least 5 "
                               f"training cases.")
    if size < 16:
        raise TeachFormerError(f"--size {size} is too small for a phantom; use 16 or more (default 48).")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise TeachFormerError(f"--spacing needs three positive numbers (z y x in mm), got {list(spacing)}.")
    spec = PhantomSpec(size=size, spacing=tuple(float(s) for s in spacing))
    raw_root = resolve_raw_root(out)
    target = raw_root / dataset_folder_name(dataset_id, name)
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite=overwrite) as tmp:
        splits = [("imagesTr", "labelsTr", range(num_cases)),
                  ("imagesTs", "labelsTs", range(num_cases, num_cases + num_test_cases))]
        cases = [(img, lab, i) for img, lab, ids in splits for i in ids]
        for img, lab, _ in cases:
            (tmp / img).mkdir(exist_ok=True)
            (tmp / lab).mkdir(exist_ok=True)
        for img, lab, i in tqdm(cases, desc="phantom cases", unit="case", disable=not progress):
            write_case(np.random.default_rng([seed, i]), spec, tmp / img, tmp / lab, f"{CASE_PREFIX}_{i:03d}")
        generate_dataset_json(
            str(tmp), dict(CHANNELS), dict(LABELS), num_cases, ".nii.gz",
            dataset_name=target.name, description="Synthetic PET/CT head-and-neck phantom (nnunet-teachformer)",
            license="CC0 (synthetic)", converted_by="teachformer convert synthetic",
            teachformer={"generator": "synthetic", "seed": seed, "size": size, "spacing_zyx": list(spec.spacing),
                         "test_cases": num_test_cases})
    return target
