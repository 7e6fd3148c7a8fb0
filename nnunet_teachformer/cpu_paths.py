"""The ways ``teachformer predict --device cpu`` can run a network (``cpu_inference``), as a light table that the
command line reads without importing nnU-Net."""
from dataclasses import dataclass
from typing import Dict

DEFAULT_TOLERANCE = 1e-3  # largest accepted |logit difference| to nnU-Net's own path, as for the ONNX export


@dataclass(frozen=True)
class CpuPath:
    name: str
    channels_last: bool
    frozen: bool  # TorchScript trace, frozen and optimised for inference (built once per fold)
    tile_per_core: bool  # the sliding window's tiles run side by side, one core each, instead of one after another
    description: str


CPU_PATHS: Dict[str, CpuPath] = {p.name: p for p in (
    CpuPath("nnunet", False, False, False, "nnU-Net's own: the network as built, default memory layout"),
    CpuPath("channels_last", True, False, False, "weights and tiles in channels-last 3D layout"),
    CpuPath("frozen", True, True, False, "channels-last, traced, frozen and optimised for inference by TorchScript"),
    CpuPath("tile_per_core", True, True, True, "frozen, and as many tiles at a time as cores, one core each"),
)}


def float16_sums_bound(largest_tile_logit: float, spatial_dims: int) -> float:
    """How far two predictions of one case can differ when their tiles differ only by rounding: nnU-Net sums the
    Gaussian-weighted tiles (up to 2^dims of them over a voxel) and their weights in float16, so each result is
    within 2^dims roundings of half a float16 step (2^-11 relative) of the exact weighted mean, for the sum and for
    the weight: 2^(dims - 10) x the largest |logit| of a tile; two results differ by up to twice that."""
    return 2.0 ** (spatial_dims - 9) * abs(largest_tile_logit)
