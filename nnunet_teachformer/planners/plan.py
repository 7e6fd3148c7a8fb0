"""``teachformer plan``: fingerprint (if missing), plan with ``TeachFormerPlanner`` and preprocess a dataset.

nnU-Net 2.8 looks planners up only inside its own package, so ``nnUNetv2_plan_and_preprocess -pl``
cannot find ours; ``plan_dataset`` runs the same steps through nnU-Net's Python API
(``extract_fingerprint_dataset``, the planner's ``plan_experiment`` as ``plan_experiment_dataset``
calls it, ``preprocess_dataset``). Preprocessing is skipped when its result is already on disk: when the
plans point at another plans' complete data folder (see the planner's reuse rule), or when a previous
``TeachFormerPlans`` run preprocessed this configuration identically (re-planning with another
``--gpu-memory`` changes patch and batch, not the data).

The fingerprint and the data folder are tied to the raw data they came from (``freshness``): after a
re-conversion ``plan`` re-does the fingerprint, the plans and the whole configuration's preprocessing, and
lists other data folders that are now stale. The raw dataset is checked with nnU-Net's integrity check
whenever the fingerprint is (re-)extracted; a problem is reported with its case and file.

``check_preprocessed`` is the guard for the steps that follow (training): it names what is missing or stale
and the command that makes it.
"""
import os
import re
from typing import List, Optional, Union

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, subdirs
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, preprocess_dataset
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.training.dataloading.nnunet_dataset import file_ending_dataset_mapping
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.nnunet_paths import resolve_dataset, train_command
from nnunet_teachformer.nnunet_ext import workers_ignore_ctrl_c
from nnunet_teachformer.planners import freshness
from nnunet_teachformer.planners.planner import PLANS_IDENTIFIER, TeachFormerPlanner, same_preprocessing

GIB = 2 ** 30


def _training_cases(dataset_name: str) -> tuple:
    """(case identifiers, file ending) of the training cases: from the raw dataset, or without raw data from
    the ground truth nnU-Net copies into nnUNet_preprocessed when it preprocesses."""
    raw = join(nnUNet_raw, dataset_name) if nnUNet_raw.is_set() else None
    if raw is not None and isfile(join(raw, "dataset.json")):
        dataset_json = load_json(join(raw, "dataset.json"))
        return sorted(get_filenames_of_train_images_and_targets(raw, dataset_json)), dataset_json["file_ending"]
    base = join(nnUNet_preprocessed, dataset_name)
    if not isfile(join(base, "dataset.json")) or not isdir(join(base, "gt_segmentations")):
        return [], ""
    ending = load_json(join(base, "dataset.json"))["file_ending"]
    return sorted(f[:-len(ending)] for f in os.listdir(join(base, "gt_segmentations")) if f.endswith(ending)), ending


def missing_preprocessed_cases(dataset_name: str, data_identifier: str) -> List[str]:
    """Training cases without complete preprocessed data or without nnU-Net's copy of their ground truth."""
    base = join(nnUNet_preprocessed, dataset_name)
    folder = join(base, data_identifier)
    cases, ending = _training_cases(dataset_name)
    if not isdir(folder) or not os.listdir(folder):
        return cases
    present = set().union(*(dataset_class.get_identifiers(folder)  # blosc2 or numpy variant
                            for dataset_class in file_ending_dataset_mapping.values()))
    return [c for c in cases if c not in present or not isfile(join(folder, c + ".pkl")) or
            not isfile(join(base, "gt_segmentations", c + ending))]


def _fix_command(dataset_id: int, plans_identifier: str, configuration: str) -> str:
    if plans_identifier == PLANS_IDENTIFIER:
        return f"teachformer plan -d {dataset_id} -c {configuration}"
    command = f"nnUNetv2_plan_and_preprocess -d {dataset_id} -c {configuration}"
    if plans_identifier == "nnUNetPlans":
        return command
    resenc = re.fullmatch(r"nnUNetResEncUNet(\w+)Plans", plans_identifier)
    if resenc:
        return f"{command} -pl nnUNetPlannerResEnc{resenc.group(1)}"
    return f"{command} -pl <the planner that writes {plans_identifier}>"


def check_preprocessed(dataset: Union[int, str], plans_identifier: str = PLANS_IDENTIFIER,
                       configuration: str = "3d_fullres") -> str:
    """The preprocessed folder of ``configuration``; TeachFormerError naming the fix if it is not ready."""
    dataset_id, name = resolve_dataset(dataset, need_raw=False)
    plans_file = join(nnUNet_preprocessed, name, plans_identifier + ".json")
    fix = _fix_command(dataset_id, plans_identifier, configuration)
    if not isfile(plans_file):
        raise TeachFormerError(f"{name} has not been planned with {plans_identifier} ({plans_file} is missing). "
                               f"Run `{fix}` first.")
    plans_manager = PlansManager(plans_file)
    if configuration not in plans_manager.available_configurations:
        raise TeachFormerError(f"{plans_identifier} of {name} has no configuration '{configuration}'; it has "
                               f"{', '.join(plans_manager.available_configurations)}.")
    data_identifier = plans_manager.get_configuration(configuration).data_identifier
    folder = join(nnUNet_preprocessed, name, data_identifier)
    if not isdir(folder) or not os.listdir(folder):
        raise TeachFormerError(f"{name} has not been preprocessed for {plans_identifier} {configuration} ({folder} "
                               f"is missing or empty). Run `{fix}`.")
    missing = missing_preprocessed_cases(name, data_identifier)
    if missing:
        raise TeachFormerError(f"Preprocessed data of {name} for {plans_identifier} {configuration} is incomplete "
                               f"({folder}: {len(missing)} case(s) missing, e.g. {missing[0]}). Run `{fix}`.")
    freshness.check_preprocessed_is_current(name, data_identifier, configuration)
    return folder


def _checked_dataset_json(raw: str) -> dict:
    """The raw dataset.json, or TeachFormerError when it is not JSON or lacks a key nnU-Net needs."""
    path = join(raw, "dataset.json")
    try:
        dataset_json = load_json(path)
    except ValueError as e:
        raise TeachFormerError(f"{path} is not valid JSON ({e}). Fix it or re-convert the dataset.") from None
    missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in dataset_json]
    if missing:
        raise TeachFormerError(f"{path} lacks {', '.join(missing)}, which nnU-Net needs (see nnU-Net's "
                               f"dataset_format.md). Add them or re-convert the dataset.")
    return dataset_json


def _case_problems(raw: str) -> List[str]:
    """'CASE: reason (file)' for each training case that nnU-Net could not use or would learn wrong from: a
    missing or unreadable file, a wrong number of channels, NaN or infinite voxels (which nnU-Net reads as 0
    from NIfTI), a label value outside dataset.json, a channel or label not on the voxel grid of _0000."""
    from pathlib import Path

    from nnunet_teachformer.conversion.validation import finite_problem, grid_problem, label_values_problem, read_image
    dataset_json = load_json(join(raw, "dataset.json"))
    allowed = sorted({int(v) for v in dataset_json["labels"].values() if isinstance(v, int)} |
                     {int(x) for v in dataset_json["labels"].values() if isinstance(v, (list, tuple)) for x in v})
    problems = []
    for case, files in sorted(get_filenames_of_train_images_and_targets(raw, dataset_json).items()):
        reasons = []
        if len(files["images"]) != len(dataset_json["channel_names"]):
            reasons.append(f"{len(files['images'])} image file(s) for {len(dataset_json['channel_names'])} channels "
                           f"in dataset.json (expected {case}_0000{dataset_json['file_ending']} ...)")
        paths = [Path(f) for f in [*files["images"], files["label"]]]
        images = [read_image(p, "label" if p == paths[-1] else "image", reasons) for p in paths]
        for path, image in zip(paths, images):
            if image is not None:
                reasons += [f"{r} ({path}): replace them with a real value" for r in
                            finite_problem(path.name, image, path)]
        if images[-1] is not None:
            reasons += [f"{r} ({paths[-1]})" for r in label_values_problem("label", images[-1], allowed)]
        if images[0] is not None:
            for path, image in zip(paths[1:], images[1:]):
                if image is not None:
                    reasons += [f"{r}; resample it onto that grid (nearest neighbour for a label), or copy "
                                f"{paths[0].name}'s header into it if only its header is wrong"
                                for r in grid_problem(str(path), image, paths[0].name, images[0])]
        problems += [f"{case}: {r}" for r in reasons]
    return problems


def verify_raw_dataset(raw: str, num_processes: int = 2) -> None:
    """Every compressed file decompresses completely, every case passes our checks (``_case_problems``), then
    nnU-Net's integrity check; a failure becomes one TeachFormerError naming each bad case and file."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunet_teachformer.conversion.validation import gzip_problem
    cases = get_filenames_of_train_images_and_targets(raw, load_json(join(raw, "dataset.json")))
    problems = [f"{case}: damaged file ({path}): {damage}"  # nnU-Net would read a truncated one as zeros
                for case, files in sorted(cases.items()) for path in [*files["images"], files["label"]]
                if os.path.isfile(path) and (damage := gzip_problem(path))]
    problems = problems or _case_problems(raw)
    detail = None
    if not problems:
        try:
            verify_dataset_integrity(raw, num_processes)
        except (AssertionError, RuntimeError, OSError, ValueError, KeyError) as e:
            # nnU-Net raises some of these without a message, having printed the details above
            detail = " ".join(str(e).split())[:500] or f"{type(e).__name__} (nnU-Net printed the details above)"
    if problems or detail:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise TeachFormerError(
            f"The integrity check of the raw dataset {raw} failed: {shown or detail}. Nothing was planned. Fix or "
            f"remove these cases (or re-convert the dataset, e.g. with --skip-bad), then run the same teachformer "
            f"plan command again.") from None


def _stale_data_folders(base: str, signatures: dict, raw: str, keep: str) -> List[str]:
    """Data folders (other plans or configurations) made from raw data that has changed since."""
    folders = [d for d in subdirs(base, join=False) if d not in ("gt_segmentations", keep)]
    return [d for d in folders if freshness.stale_changes(base, d, signatures, raw)]


def plan_dataset(dataset: Union[int, str], configuration: str = "3d_fullres", gpu_memory_gb: Optional[float] = None,
                 num_processes: int = 2, progress: bool = True) -> dict:
    """Fingerprints (if missing), plans ``TeachFormerPlans`` and preprocesses ``configuration``; returns a summary:
    patch and batch size, spacing, normalisation per channel, data folder, the teachers' measured memory."""
    dataset_id, name = resolve_dataset(dataset)
    if gpu_memory_gb is not None and gpu_memory_gb <= 0:
        raise TeachFormerError(f"--gpu-memory {gpu_memory_gb}: give the GPU memory in GB, e.g. 8, 24 or 80.")
    base, raw = join(nnUNet_preprocessed, name), join(nnUNet_raw, name)
    _checked_dataset_json(raw)
    signatures = freshness.raw_case_signatures(raw)
    fingerprint_changes = freshness.stale_changes(base, freshness.FINGERPRINT, signatures, raw)
    if fingerprint_changes is None or fingerprint_changes:
        with workers_ignore_ctrl_c():
            verify_raw_dataset(raw, num_processes)
            extract_fingerprint_dataset(dataset_id, num_processes=num_processes, check_dataset_integrity=False,
                                        clean=True, verbose=False, show_progress_bar=progress)
    if fingerprint_changes is None or fingerprint_changes or freshness.FINGERPRINT not in freshness.load_record(base):
        freshness.save_record(base, freshness.FINGERPRINT, signatures)
    plans_file = join(base, PLANS_IDENTIFIER + ".json")
    previous_plans = load_json(plans_file) if isfile(plans_file) else None

    # what plan_experiment_dataset does, plus the progress switch
    kwargs = {} if gpu_memory_gb is None else {"gpu_memory_target_in_gb": float(gpu_memory_gb)}
    planner = TeachFormerPlanner(dataset_id, **kwargs)
    planner.show_progress_bar = progress
    planner.plan_experiment()

    plans = load_json(plans_file)
    plans_manager = PlansManager(plans)
    if configuration not in plans_manager.available_configurations:
        raise TeachFormerError(f"nnU-Net planned no '{configuration}' configuration for {name}; planned: "
                               f"{', '.join(plans_manager.available_configurations)}. Pass one of those with -c.")
    config = plans_manager.get_configuration(configuration)
    record = plans["teachformer"]["configurations"].get(configuration, {})
    on_disk = (record.get("data_reused_from") is not None or
               (previous_plans is not None and same_preprocessing(plans, previous_plans, configuration)))
    data_changes = freshness.stale_changes(base, config.data_identifier, signatures, raw)
    preprocess_now = not (on_disk and not data_changes and not missing_preprocessed_cases(name, config.data_identifier))
    if preprocess_now:
        freshness.save_record(base, config.data_identifier, None)  # unknown until preprocessing has finished
        with workers_ignore_ctrl_c():
            preprocess_dataset(dataset_id, PLANS_IDENTIFIER, [configuration], [num_processes], verbose=False,
                               show_progress_bar=progress)
        freshness.save_record(base, config.data_identifier, signatures, configuration=configuration)
    elif config.data_identifier not in freshness.load_record(base):
        freshness.save_record(base, config.data_identifier, signatures, configuration=configuration)
    return {
        "dataset": name,
        "dataset_id": dataset_id,
        "plans_identifier": PLANS_IDENTIFIER,
        "plans_file": plans_file,
        "configuration": configuration,
        "patch_size": list(config.patch_size),
        "batch_size": config.batch_size,
        "spacing": list(config.spacing),
        "transpose_forward": plans["transpose_forward"],
        "normalization": {c["channel"]: c["scheme"] for c in plans["teachformer"]["channel_normalization"]},
        "data_identifier": config.data_identifier,
        "data_reused_from": record.get("data_reused_from"),
        "preprocessed_now": preprocess_now,
        "raw_changes": data_changes or fingerprint_changes or [],
        "stale_data_folders": _stale_data_folders(base, signatures, raw, keep=config.data_identifier)
        if fingerprint_changes else [],
        "gpu_memory_gb": plans["teachformer"]["gpu_memory_target_in_gb"],
        **{k: record[k] for k in ("nnunet_patch_size", "teachers", "heaviest_teacher", "batch_size_by_memory",
                                  "batch_size_cap_5_percent", "fits_gpu_memory") if k in record},
    }


def format_summary(summary: dict) -> str:
    """The summary of ``plan_dataset`` as the lines ``teachformer plan`` prints."""
    x = lambda values: " x ".join(f"{v:g}" for v in values)  # noqa: E731
    lines = [f"{summary['dataset']}: {summary['plans_identifier']}, configuration {summary['configuration']}",
             f"  patch size     {x(summary['patch_size'])}"
             + (f"   (nnU-Net's own estimate: {x(summary['nnunet_patch_size'])})" if "nnunet_patch_size" in summary
                else ""),
             f"  batch size     {summary['batch_size']}",
             f"  spacing        {x(summary['spacing'])} mm   (axes in nnU-Net's order, transpose "
             f"{summary['transpose_forward']})",
             "  normalisation  " + ", ".join(f"{c}: {s}" for c, s in summary["normalization"].items())]
    if "teachers" in summary:
        gpu = summary["gpu_memory_gb"]
        lines.append(f"  memory         {gpu:g} GB target; batch {summary['batch_size_by_memory']} by memory, "
                     f"nnU-Net's 5% dataset cap {summary['batch_size_cap_5_percent']}, minimum 2")
        for network, t in summary["teachers"].items():
            lines.append(f"    {network:<14} {t['activation_bytes_per_sample'] / GIB:6.2f} GiB per sample + "
                         f"{4 * t['parameter_bytes'] / GIB:.2f} GiB weights/gradients/Adam -> {t['max_batch_size']} "
                         f"per {gpu:g} GB" + ("  (heaviest)" if network == summary["heaviest_teacher"] else ""))
        if not summary["fits_gpu_memory"]:
            lines.append(f"  warning: {summary['heaviest_teacher']} cannot train 2 samples in {gpu:g} GB even at the "
                         f"smallest patch; give the real GPU memory with --gpu-memory, or expect out-of-memory.")
    reused = f" (reused from {summary['data_reused_from']}, no second copy)" if summary["data_reused_from"] else ""
    done = "preprocessed now" if summary["preprocessed_now"] else "already preprocessed"
    if summary["raw_changes"]:
        lines.append(f"  raw data       changed since the last planning: "
                     f"{freshness.summarize_changes(summary['raw_changes'])}; fingerprint and data redone")
    for folder in summary["stale_data_folders"]:
        lines.append(f"  warning: {folder} was made from the old raw data and is stale; redo it with its planner "
                     f"(e.g. `nnUNetv2_plan_and_preprocess -d {summary['dataset_id']}` for nnUNetPlans) before "
                     f"training on it")
    lines += [f"  data           {summary['data_identifier']}{reused}, {done}",
              f"  plans          {summary['plans_file']}",
              "Train with e.g.: " + " ".join(train_command(summary["dataset_id"], summary["configuration"], 0,
                                                           summary["plans_identifier"], "SwinUNETRTrainer"))]
    return "\n".join(lines)
