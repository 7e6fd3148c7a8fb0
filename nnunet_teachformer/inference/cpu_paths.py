"""The ways ``teachformer predict --device cpu`` can run a network (``cpu_inference``), as a light table that the
command line reads without importing nnU-Net."""
from dataclasses import dataclass
from typing import Dict

DEFAULT_TOLERANCE = 1e-3  # largest accepted |logit difference| to nnU-Net's own path, as for the ONNX export
DEFAULT_STEP_SIZE = 0.5  # nnU-Net's tile step, as a fraction of the tile (nnUNetv2_predict -step_size)


@dataclass(frozen=True)
class CpuPath:
    name: str
    channels_last: bool
    engine: str  # "pytorch" (eager), "torchscript" (traced, frozen, optimised) or "openvino" (converted, compiled)
    # the sliding window hands its tiles to the network from one thread per core instead of one after another
    # (CpuPredictor), and runs them side by side, one core each (a PyTorch thread or an OpenVINO stream per core)
    threaded_tiles: bool
    description: str
    precision: str = "f32"  # the engine's arithmetic; "bf16" is an inexact lever, never taken by auto

    @property
    def exact(self) -> bool:
        """Whether the path computes in float32 as nnU-Net does (auto's candidates; within tolerance, measured)."""
        return self.precision == "f32"

    @property
    def built_per_fold(self) -> bool:
        """Whether the network is built anew (traced or converted) for each fold's weights, once, and kept."""
        return self.engine != "pytorch"


CPU_PATHS: Dict[str, CpuPath] = {p.name: p for p in (
    CpuPath("nnunet", False, "pytorch", False, "nnU-Net's own: the network as built, default memory layout"),
    CpuPath("channels_last", True, "pytorch", False, "weights and tiles in channels-last 3D layout"),
    CpuPath("frozen", True, "torchscript", False,
            "channels-last, traced, frozen and optimised for inference by TorchScript"),
    CpuPath("tile_per_core", True, "torchscript", True, "frozen, and as many tiles at a time as cores, one core each"),
    CpuPath("openvino", False, "openvino", True,
            "converted by OpenVINO and compiled for this CPU in float32, one tile per core at a time (an OpenVINO "
            "stream each)"),
    CpuPath("openvino_bf16", False, "openvino", True,
            "openvino compiled in bfloat16 (fast where the CPU has AVX512-BF16 or AMX); not exact", "bf16"),
)}

# What each inexact lever of `teachformer predict` cost on a trained student (benchmarks/README.md,
# real_ct_prediction.py --settings levers: H-DenseFormer Light, bone on two held-out 512 x 512 x 61 CTs, AMD EPYC
# with AVX512-BF16): printed in --help, so that whoever takes one knows the price.
LEVER_COSTS: Dict[str, str] = {
    "openvino_bf16": "measured forwards 1.6x faster than openvino, Dice 0.998 to the exact segmentation (0.009 % "
                     "of voxels differ), Dice to the labels +0.001",
    "step_size": "Measured: 0.75 made the forwards 1.6x faster, Dice 0.978 to the exact segmentation (0.08 % of "
                 "voxels differ), Dice to the labels -0.002; 1 (no overlap) 3.3x faster, Dice 0.963 (0.13 %), -0.005",
    "mirror_axes": "Measured with mirroring: 1 2 made the forwards 2.1x faster, Dice 0.972 to the exact "
                   "segmentation (0.10 % of voxels differ), Dice to the labels -0.006; 2 alone 4.6x faster, Dice "
                   "0.959 (0.14 %), -0.010",
}


FLOAT16_RELATIVE_ROUNDING = 2.0 ** -11  # a float16 result in float16's normal range is within this of exact
FLOAT16_SUBNORMAL_ROUNDING = 2.0 ** -25  # below it (subnormals), within this absolute amount


def float16_sums_bound(weight_sum, tiles, largest_tile_logit: float, folds: int = 1):
    """Per voxel, how far two predictions of one case can differ when their tiles differ only by rounding (add
    DEFAULT_TOLERANCE for the tiles' own difference). nnU-Net adds each voxel's Gaussian-weighted tile logits and
    the weights in float16 (``tiles`` additions; ``weight_sum`` is the weights' float16 sum) and divides; with
    several ``folds`` it then adds the folds' results and divides in float16 too. Each operation rounds by at most
    max(2^-11 |result|, 2^-25); the tile sums stay within weight_sum x L (L the largest |tile logit|), so one
    prediction is within tiles (2^-11 L + 2^-25 / weight_sum) + r (2^-11 L + 2^-25) of the exact mean, r = 1
    rounding after the tiles for one fold, folds + 1 for several, and two predictions within twice that. Where
    the weights are float16 subnormals (tile corners at a case's border) this is a whole logit or more: nnU-Net's
    own sums are that coarse there. Works on numpy arrays and torch tensors alike."""
    largest = abs(largest_tile_logit)
    after_tiles = 1 if folds == 1 else folds + 1
    per_prediction = (tiles * (FLOAT16_RELATIVE_ROUNDING * largest + FLOAT16_SUBNORMAL_ROUNDING / weight_sum)
                      + after_tiles * (FLOAT16_RELATIVE_ROUNDING * largest + FLOAT16_SUBNORMAL_ROUNDING))
    return 2 * per_prediction
