"""``TeachFormerPlanner``: nnU-Net's default planner with patches the transformer teachers can take.

nnU-Net picks a patch divisible by 2^(poolings per axis) for its U-Net; SwinUNETR needs every axis a
multiple of 32 and UNETR a grid of 16-voxel patches. This planner keeps everything nnU-Net decides
(target spacing, transpose, resampling, the lowres cascade) and changes, for the ``2d`` configuration
(slices, the teachers built in 2D) and each 3D one:

* **patch size**: nnU-Net's own estimate, each axis rounded to a multiple of 32: up when the result
  stays within the median image shape plus a padding allowance of max(16 voxels, 25 %) (nnU-Net pads
  images smaller than the patch; more padding than that is mostly wasted compute), otherwise down
  (never below 32). At least one axis is 64 or more: SwinUNETR's bottleneck sits at 1/32 and is
  instance-normalised, and a 32^3 (32^2) patch leaves it one voxel, which PyTorch refuses in training. If the
  most memory-hungry teacher cannot train two samples in the GPU memory target, the axis largest
  relative to the median shape shrinks by 32 until it can (nnU-Net's own order of reduction);
* **batch size**: measured for every teacher at that patch (``planners.memory``), the smallest of the
  teachers' batches (the most memory-hungry teacher decides), then nnU-Net's own rules: at most 5 % of
  the dataset's voxels per step, at least 2;
* **U-Net topology**: the ``architecture`` entry is re-derived for the final patch with nnU-Net's
  ``get_pool_and_conv_props``, so nnU-Net's own trainers (and the CNN students' baselines) still train
  on these plans. Where nnU-Net's rule would pool an axis more often than the patch is divisible by two
  (it would pad 288 to 320), the deepest poolings of that axis are dropped instead.

Normalisation per channel (``determine_normalization_scheme_and_whether_mask_is_used_for_norm``):
CT -> nnU-Net's ``CTNormalization``; PET -> ``CTNormalization`` too; anything else -> nnU-Net's mapping
(``ZScoreNormalization`` for MRI and any unknown name; ``noNorm``, ``zscore``, ``rescale_to_0_1`` keep
their meaning). Why CTNormalization for PET: SUV is already a calibrated, patient-comparable unit, and
CTNormalization is one monotone mapping for the whole dataset (clip to the 0.5-99.5 percentiles of the
foreground SUVs of all training cases, subtract their mean, divide by their std), so a given SUV maps to
the same input value in every patient and thresholds such as SUV 2.5 keep their meaning. nnU-Net's
default for unknown names, per-image z-score, divides by each image's own std, which is dominated by
how much hot physiological uptake (brain, bladder) happens to be in the field of view, so the same
tumour SUV would reach the network as different values in different patients. The clip saturates
uptake below the coldest 0.5 % and above the hottest 0.5 % of tumour voxels (background at one end,
brain or bladder at the other), where SUV no longer tells tumour from background; CT carries the
anatomy there.
Plans may only name classes nnU-Net finds itself (``nnUNetv2_predict`` re-resolves them), which is why
PET uses nnU-Net's class instead of one of ours. Channels count as PET when a word of their name is
PET, PT or SUV (any case).

Preprocessed data is reused: when a configuration preprocesses exactly as a configuration of the same
name in one of ``reuse_data_from`` (same transpose, spacing, normalisation, resampling, preprocessor and
fingerprint), its ``data_identifier`` points at that folder (e.g. ``nnUNetPlans_3d_fullres``) and no
second copy is written. Everything the planner decided, and why, is stored in the plans under
``"teachformer"``; ``experiment_planner_used`` names this class.
"""
import json
import math
import os
import re
from contextlib import contextmanager
from copy import deepcopy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization
from nnunetv2.utilities.json_export import recursive_fix_for_json_export
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

import nnunet_teachformer
from nnunet_teachformer.networks.registry import NETWORKS
from nnunet_teachformer.roster import PAPER_TEACHERS
from nnunet_teachformer.planners.memory import MemoryEstimate, measure_training_memory

PLANS_IDENTIFIER = "TeachFormerPlans"
PATCH_MULTIPLE = 32
PET_WORDS = ("pet", "pt", "suv")
PET_NORMALIZATION = CTNormalization
# what decides the content of a preprocessed folder, besides transpose, reader and fingerprint
PREPROCESSING_KEYS = ("preprocessor_name", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                      "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs")


def is_pet_channel(channel_name: str) -> bool:
    return any(word in PET_WORDS for word in re.split(r"[^a-z0-9]+", str(channel_name).casefold()))


def round_patch_axis(size: int, median: float, multiple: int = PATCH_MULTIPLE) -> int:
    """``size`` rounded to a multiple of ``multiple``: up if that stays within max(median + 16, 1.25 median)."""
    up = math.ceil(size / multiple) * multiple
    if up <= max(median + 16, 1.25 * median):
        return up
    return max(multiple, (int(size) // multiple) * multiple)


def unet_topology(spacing: Sequence[float], patch_size: Sequence[int], min_feature_map_size: int
                  ) -> Tuple[Tuple[Tuple[int, ...], ...], Tuple[Tuple[int, ...], ...]]:
    """nnU-Net's (strides, kernel sizes) per stage for ``patch_size``, never pooling an axis more often
    than its size is divisible by 2 (nnU-Net would pad the patch instead)."""
    _, strides, kernels, _, _ = get_pool_and_conv_props(spacing, patch_size, min_feature_map_size, 999999)
    allowed = [(int(p) & -int(p)).bit_length() - 1 for p in patch_size]  # powers of two dividing each axis
    pooled = [0] * len(patch_size)
    trimmed = []
    for stage in strides:
        stage = list(stage)
        for axis, s in enumerate(stage):
            if s == 2:
                if pooled[axis] < allowed[axis]:
                    pooled[axis] += 1
                else:
                    stage[axis] = 1
        trimmed.append(tuple(stage))
    kernels = list(kernels)
    while len(trimmed) > 1 and all(s == 1 for s in trimmed[-1]):
        trimmed.pop()
        kernels.pop()
    return tuple(trimmed), tuple(tuple(k) for k in kernels)


class TeachFormerPlanner(ExperimentPlanner):
    patch_multiple = PATCH_MULTIPLE
    # at least one axis this long (SwinUNETR's instance-normalised 1/32 bottleneck needs > 1 voxel)
    min_longest_axis = 2 * PATCH_MULTIPLE
    teacher_networks: Tuple[str, ...] = PAPER_TEACHERS  # keys of networks.registry.NETWORKS
    teacher_preset = "paper"
    # plans whose preprocessed data we may point at instead of writing our own copy, in order of preference
    reuse_data_from: Tuple[str, ...] = ("nnUNetPlans", "nnUNetResEncUNetMPlans", "nnUNetResEncUNetLPlans",
                                        "nnUNetResEncUNetXLPlans")
    show_progress_bar = True

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = PLANS_IDENTIFIER,
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...]] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.teachformer_notes: Dict[str, dict] = {}  # data_identifier -> what get_plans_for_configuration decided

    def plan_experiment(self):
        with _n_proc_da_at_least_one():
            return super().plan_experiment()

    # normalisation ----------------------------------------------------------------------------------
    def channel_names(self) -> List[str]:
        names = self.dataset_json["channel_names"] if "channel_names" in self.dataset_json else \
            self.dataset_json["modality"]
        return list(names.values())  # nnU-Net's order for normalization_schemes

    def determine_normalization_scheme_and_whether_mask_is_used_for_norm(self) -> Tuple[List[str], List[bool]]:
        schemes, use_mask = super().determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        for i, name in enumerate(self.channel_names()):
            if is_pet_channel(name):
                schemes[i] = PET_NORMALIZATION.__name__
                use_mask[i] = False  # a dataset-global mapping: the whole image, like CT
        return schemes, use_mask

    # patch and batch ----------------------------------------------------------------------------------
    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        dims = len(spacing)
        median = [float(m) for m in median_shape]
        nnunet_patch = [int(p) for p in plan["patch_size"]]
        patch = [round_patch_axis(p, m, self.patch_multiple) for p, m in zip(nnunet_patch, median)]
        if max(patch) < self.min_longest_axis:
            patch[int(np.argmax(median))] = self.min_longest_axis
        estimates = self.teacher_estimates(patch)
        while self._memory_batch_size(estimates) < self.UNet_min_batch_size:
            shrinkable = [a for a in range(dims) if patch[a] > self.patch_multiple and
                          max(patch[:a] + [patch[a] - self.patch_multiple] + patch[a + 1:]) >= self.min_longest_axis]
            if not shrinkable:
                break
            axis = max(shrinkable, key=lambda a: patch[a] / median[a])
            patch[axis] -= self.patch_multiple
            estimates = self.teacher_estimates(patch)

        strides, kernels = unet_topology(spacing, patch, self.UNet_featuremap_min_edge_length)
        num_stages = len(strides)
        max_features = self.UNet_max_features_3d if dims == 3 else self.UNet_max_features_2d
        plan["architecture"]["arch_kwargs"].update({
            "n_stages": num_stages,
            "features_per_stage": tuple(min(max_features, self.UNet_base_num_features * 2 ** i)
                                        for i in range(num_stages)),
            "kernel_sizes": kernels,
            "strides": strides,
            "n_conv_per_stage": self.UNet_blocks_per_stage_encoder[:num_stages],
            "n_conv_per_stage_decoder": self.UNet_blocks_per_stage_decoder[:num_stages - 1],
        })
        memory_batch = self._memory_batch_size(estimates)
        cap = round(approximate_n_voxels_dataset * self.max_dataset_covered / np.prod(patch, dtype=np.float64))
        plan["patch_size"] = tuple(patch)
        plan["batch_size"] = max(min(memory_batch, cap), self.UNet_min_batch_size)
        heaviest = min(estimates, key=lambda e: e.max_batch_size(self.UNet_vram_target_GB))
        self.teachformer_notes[data_identifier] = {
            "nnunet_patch_size": nnunet_patch,
            "patch_size": list(patch),
            "teacher_preset": self.teacher_preset,
            "teachers": {e.network: e.as_dict(self.UNet_vram_target_GB) for e in estimates},
            "heaviest_teacher": heaviest.network,
            "batch_size_by_memory": memory_batch,
            "batch_size_cap_5_percent": int(cap),
            "fits_gpu_memory": memory_batch >= self.UNet_min_batch_size,
        }
        return plan

    def teacher_estimates(self, patch_size: Sequence[int]) -> List[MemoryEstimate]:
        """Training memory of every teacher at ``patch_size`` (``teacher_preset`` widths)."""
        num_input_channels = len(self.channel_names())
        num_classes = len(self.dataset_json["labels"])
        keys = tqdm(self.teacher_networks, desc=f"teacher memory at {'x'.join(map(str, patch_size))}",
                    unit="network", leave=False, disable=not self.show_progress_bar)
        return [measure_training_memory(NETWORKS[k], num_input_channels, num_classes, patch_size,
                                        self.teacher_preset) for k in keys]

    def _memory_batch_size(self, estimates: Sequence[MemoryEstimate]) -> int:
        return min(e.max_batch_size(self.UNet_vram_target_GB) for e in estimates)

    # reuse and record -------------------------------------------------------------------------------
    def reusable_data(self, plans: dict, configuration: str) -> Optional[Tuple[str, str]]:
        """(plans name, data identifier) of existing plans whose ``configuration`` preprocesses exactly like
        ours, or None."""
        for other_name in self.reuse_data_from:
            other_file = join(nnUNet_preprocessed, self.dataset_name, other_name + ".json")
            if other_name == self.plans_identifier or not isfile(other_file):
                continue
            other_plans = load_json(other_file)
            if same_preprocessing(plans, other_plans, configuration):
                return other_name, PlansManager(other_plans).get_configuration(configuration).data_identifier
        return None

    def save_plans(self, plans):
        """nnU-Net's ``plan_experiment`` hands the finished plans over here: point configurations at
        reusable data and record what this planner decided, then save as nnU-Net does."""
        configurations = {}
        for name, config in plans["configurations"].items():
            if "data_identifier" not in config:
                continue  # inherits its data (3d_cascade_fullres)
            notes = deepcopy(self.teachformer_notes.get(config["data_identifier"], {}))
            reuse = self.reusable_data(plans, name)
            notes["data_reused_from"] = reuse[0] if reuse else None
            if reuse:
                config["data_identifier"] = reuse[1]
            configurations[name] = notes
        schemes, _ = self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        plans["teachformer"] = {
            "planner": f"{type(self).__module__}.{type(self).__qualname__}",
            "package_version": nnunet_teachformer.__version__,
            "gpu_memory_target_in_gb": self.UNet_vram_target_GB,
            "patch_rule": f"patch axes (2d and 3d) are multiples of {self.patch_multiple}: nnU-Net's estimate "
                          f"rounded up within max(median + 16, 1.25 median), else down; shrunk while the heaviest teacher "
                          f"cannot train {self.UNet_min_batch_size} samples in the GPU memory target",
            "batch_rule": "min over teachers of floor((GPU - 4 x parameter bytes) / fp32 bytes saved for backward "
                          "per sample), measured at the patch; then nnU-Net's 5 % dataset cap and minimum of 2",
            "channel_normalization": [
                {"channel": name, "pet": is_pet_channel(name), "scheme": scheme}
                for name, scheme in zip(self.channel_names(), schemes)],
            "pet_normalization": "CTNormalization: one dataset-global clip (foreground 0.5-99.5 percentiles) and "
                                 "standardisation, so an SUV maps to the same value in every patient",
            "configurations": configurations,
        }
        super().save_plans(plans)


@contextmanager
def _n_proc_da_at_least_one():
    """nnU-Net's U-Net memory estimate calls ``torch.set_num_threads(nnUNet_n_proc_DA)``, which fails for 0,
    a valid training setting (augmentation in the main process, common on CPU); plan with 1 instead."""
    value = os.environ.get("nnUNet_n_proc_DA")
    if value is None or int(value) > 0:
        yield
        return
    os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        yield
    finally:
        os.environ["nnUNet_n_proc_DA"] = value


def same_preprocessing(plans: dict, other_plans: dict, configuration: str) -> bool:
    """Whether ``configuration`` of both plans writes the same preprocessed data (it must exist in both)."""
    if configuration not in plans["configurations"] or configuration not in other_plans["configurations"]:
        return False
    ours = PlansManager(plans).get_configuration(configuration).configuration
    theirs = PlansManager(other_plans).get_configuration(configuration).configuration
    return (_json(plans["transpose_forward"]) == _json(other_plans["transpose_forward"]) and
            plans["image_reader_writer"] == other_plans["image_reader_writer"] and
            _json(plans["foreground_intensity_properties_per_channel"]) ==
            _json(other_plans["foreground_intensity_properties_per_channel"]) and
            np.allclose(_json(ours["spacing"]), _json(theirs["spacing"]), rtol=0, atol=1e-6) and
            all(_json(ours.get(k)) == _json(theirs.get(k)) for k in PREPROCESSING_KEYS))


def _json(value):
    """``value`` as JSON would give it back (tuples -> lists, numpy scalars -> Python)."""
    holder = {"v": deepcopy(value)}
    recursive_fix_for_json_export(holder)
    return json.loads(json.dumps(holder["v"]))
