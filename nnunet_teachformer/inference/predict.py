"""``teachformer predict``: a trained model's ensemble of folds on a folder of images, checked first.

Before anything runs, the checkpoints (present and loadable) and the input folder (file endings, channel
suffixes, readable images on one grid per case) are checked against the model; then ``nnUNetv2_predict`` on a
GPU, or nnU-Net's predictor in this process along one of the CPU paths (``inference.cpu_inference``); then
the postprocessing that ``nnUNetv2_find_best_configuration`` chose, where it exists. A refused or failed
prediction leaves nothing behind in the output folder.
"""
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.inference.cpu_paths import DEFAULT_STEP_SIZE, DEFAULT_TOLERANCE
from nnunet_teachformer.inference.stage_times import StageTimes
from nnunet_teachformer.inference.worker_start import nnunet_workers_forked, start_fork_server
from nnunet_teachformer.nnunet_paths import (Fold, check_folds, check_not_raw_data, model_folder, refuse_replacing,
                                             resolve_dataset, train_command, trained_folds)

IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".bmp", ".tif", ".tiff", ".npy", ".npz")
SITK_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def check_checkpoint(path: Path, fix: str) -> dict:
    """The checkpoint at ``path``; TeachFormerError naming ``path`` and ``fix`` when it is not a loadable nnU-Net
    checkpoint (e.g. truncated)."""
    import torch
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, empty or foreign: any loader failure means the same to the user
        raise TeachFormerError(f"cannot load the checkpoint {path} ({type(e).__name__}: {str(e).strip()[:200]}): "
                               f"it is truncated or not a PyTorch file (an interrupted copy or training?). Delete it "
                               f"and {fix}.") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise TeachFormerError(f"{path} is not an nnU-Net checkpoint (no network_weights in it). Delete it and {fix}.")
    return checkpoint


def checked_mirror_axes(asked: Sequence[int], allowed: Optional[Sequence[int]], checkpoint: Path) -> tuple:
    """``asked`` (--mirror-axes), sorted, when the model of ``checkpoint`` allows mirroring along each of them at
    inference (``allowed``: its ``inference_allowed_mirroring_axes``); else TeachFormerError."""
    allowed = tuple(allowed or ())
    refused = sorted(set(asked) - set(allowed))
    if refused:
        raise TeachFormerError(f"--mirror-axes {' '.join(map(str, asked))}: {checkpoint} allows mirroring along "
                               f"axes {' '.join(map(str, allowed)) or '(none)'} only, so its model cannot be mirrored "
                               f"along {' '.join(map(str, refused))} at inference. Pick among those, or leave "
                               f"--mirror-axes out for all of them.")
    return tuple(sorted(set(asked)))


def check_prediction_input(folder: Path, dataset_json: dict) -> List[str]:
    """The case ids of ``folder`` after checking it against the model's ``dataset_json``; TeachFormerError naming
    each file that nnU-Net would skip or fail on (wrong ending, no _XXXX channel suffix, missing or extra
    channels, an unreadable or truncated image, channels on different grids) and when there is no case at all.
    Every image is read once here: a truncated file otherwise fails inside nnU-Net's workers, mid-prediction."""
    import numpy as np

    from nnunet_teachformer.conversion.validation import read_image

    ending, channels = dataset_json["file_ending"], dataset_json["channel_names"]
    expected = {f"{i:04d}" for i in range(len(channels))}
    example = "CASE_" + ", CASE_".join(f"{i:04d}{ending} ({channels[str(i)]})" for i in range(len(channels)))
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
    cases: Dict[str, Dict[str, Path]] = {}
    problems = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        match = pattern.fullmatch(path.name)
        if match:
            cases.setdefault(match.group(1), {})[match.group(2)] = path
        elif path.name.endswith(ending):
            problems.append(f"{path.name} has no _XXXX channel suffix")
        elif path.name.lower().endswith(IMAGE_ENDINGS):
            problems.append(f"{path.name} is not a {ending} file")
    for case, files in sorted(cases.items()):
        if set(files) != expected:
            problems.append(f"case {case} has channel(s) {', '.join('_' + c for c in sorted(files))} but the model "
                            f"needs {len(channels)} ({', '.join('_' + c for c in sorted(expected))})")
            continue
        if ending not in SITK_ENDINGS:  # nnU-Net's other readers (numpy, tif, png) are left to nnU-Net
            continue
        grids = {}
        for channel, path in sorted(files.items()):
            image = read_image(path, "image", problems)
            if image is None:
                continue
            grids[path.name] = (image.GetSize(), np.round(image.GetSpacing(), 3).tolist(),
                                np.round(image.GetOrigin(), 2).tolist(), np.round(image.GetDirection(), 3).tolist())
        if len({repr(g) for g in grids.values()}) > 1:
            problems.append(f"case {case} has channels on different voxel grids (size, spacing, origin or direction: "
                            + "; ".join(f"{n}: size {'x'.join(map(str, g[0]))}, spacing {g[1]}"
                                        for n, g in grids.items()) + "); resample them onto one grid")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise TeachFormerError(f"input folder {folder} does not match the model: {shown}. The model reads one "
                               f"{ending} file per channel and case, named {example}. Rename or remove these files; "
                               f"nothing was predicted.")
    if not cases:
        raise TeachFormerError(f"input folder {folder} holds no case: the model reads one {ending} file per channel "
                               f"and case, named {example}. Nothing was predicted.")
    return sorted(cases)


PREDICTION_RECORD = "predict_from_raw_data_args.json"  # nnU-Net writes it into every prediction folder


def check_output_folder(output: Path, cases: Sequence[str], dataset_json: dict, save_probabilities: bool,
                        overwrite: bool) -> None:
    """Refuses an output folder where the prediction would replace what the user has: never a raw dataset's image
    or label folder, and no existing file of the same names (segmentations, probabilities, a dataset.json that
    is not nnU-Net's copy in an earlier prediction folder) unless ``overwrite``."""
    check_not_raw_data(output, "-o")
    if overwrite or not output.is_dir():
        return
    endings = [dataset_json["file_ending"]] + ([".npz", ".pkl"] if save_probabilities else [])
    clashes = [output / (c + e) for c in cases for e in endings if (output / (c + e)).exists()]
    if (output / "dataset.json").is_file() and not (output / PREDICTION_RECORD).is_file():
        clashes.append(output / "dataset.json")
    if clashes:
        shown = ", ".join(p.name for p in clashes[:3]) + (", ..." if len(clashes) > 3 else "")
        raise TeachFormerError(f"output folder {output} already holds {len(clashes)} file(s) this prediction would "
                               f"write ({shown}); nothing was changed. Give another folder, or pass --overwrite to "
                               f"replace them.")


def _undo_output(output: Path, existed_before: set) -> None:
    """Removes what a failed prediction added to ``output`` (the whole folder if the run created it)."""
    import shutil
    if existed_before is None:
        shutil.rmtree(output, ignore_errors=True)
        return
    for path in output.iterdir() if output.is_dir() else ():
        if path.name not in existed_before:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def postprocessing_file(model: Path, folds: Sequence[Fold]) -> Optional[Path]:
    """The ``postprocessing.pkl`` that ``nnUNetv2_find_best_configuration -f <folds>`` determined on this model's
    cross-validation of exactly these folds, or None."""
    from nnunetv2.utilities.file_path_utilities import folds_tuple_to_string
    path = model / f"crossval_results_folds_{folds_tuple_to_string(folds)}" / "postprocessing.pkl"
    return path if path.is_file() else None


def _postprocess(output: Path, cases: Sequence[str], dataset_json: dict, model: Path, pp_file: Path) -> None:
    """nnU-Net's own postprocessing steps applied in place to the cases just predicted (not to other files of the
    output folder)."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.postprocessing.remove_connected_components import load_postprocess_save
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    pp_fns, pp_fn_kwargs = load_pickle(str(pp_file))
    reader_writer = PlansManager(str(model / "plans.json")).image_reader_writer_class()
    steps = ", ".join(f"{fn.__name__}({kw})" for fn, kw in zip(pp_fns, pp_fn_kwargs)) or "none (it did not help)"
    print(f"Postprocessing chosen by nnUNetv2_find_best_configuration ({pp_file}): {steps}", flush=True)
    for case in cases:
        segmentation = str(output / (case + dataset_json["file_ending"]))
        load_postprocess_save(segmentation, segmentation, reader_writer, pp_fns, pp_fn_kwargs)


def predict(input_folder: str, output_folder: str, dataset_id, folds: Sequence[Fold],
            trainer: str = "TeachFormerTrainer",
            plans: str = "TeachFormerPlans", configuration: str = "3d_fullres", device: str = "cuda",
            save_probabilities: bool = False, checkpoint: str = "checkpoint_final.pth", tta: bool = True,
            processes: Optional[int] = None, cpu_path: str = "auto", postprocessing: bool = True,
            overwrite: bool = False, stage_times: Optional[str] = None, step_size: float = DEFAULT_STEP_SIZE,
            mirror_axes: Optional[Sequence[int]] = None) -> None:
    """Predicts with ``trainer``'s ensemble of ``folds`` after checking the checkpoints and the input folder against
    the model: ``nnUNetv2_predict`` on a GPU; on the CPU nnU-Net's predictor in this process along ``cpu_path``
    (``cpu_inference``: ``auto`` takes the fastest path that gives nnU-Net's logits, and says which). Then, with
    ``postprocessing``, the connected-component postprocessing that ``nnUNetv2_find_best_configuration`` chose for
    this model and these folds, where it exists (``postprocessing_file``), as ``nnUNetv2_apply_postprocessing``
    would apply it.
    ``processes`` sets the pre- and post-processing workers (-npp/-nps; nnU-Net's default is 3 each). A refused
    or failed prediction leaves no output behind: the output folder is removed if this call created it, else only
    what it added; files already there are never replaced unless ``overwrite`` (``check_output_folder``).
    ``stage_times``: a JSON file to write the seconds per stage of a CPU prediction to (``stage_times.STAGES``).
    ``step_size``: nnU-Net's tile step (``-step_size``); ``mirror_axes``: on the CPU, the model's mirroring axes
    that test-time augmentation uses (default all; nnUNetv2_predict has no such choice, so a GPU refuses it)."""
    import json

    if stage_times:
        refuse_replacing([stage_times], overwrite, "--stage-times")
    if mirror_axes is not None and device != "cpu":
        raise TeachFormerError(f"--mirror-axes works with --device cpu only: on {device}, nnUNetv2_predict mirrors "
                               f"along every axis the model allows. Leave it out, or pass --device cpu.")
    if mirror_axes is not None and not tta:
        raise TeachFormerError("--mirror-axes picks the axes of test-time mirroring, which --disable-tta switches "
                               "off; give one of the two.")
    if not 0 < step_size <= 1:
        raise TeachFormerError(f"--step-size {step_size}: the tile step is a fraction of the tile, above 0 and at "
                               f"most 1 (nnU-Net's default 0.5; 1 means tiles that do not overlap).")
    times = StageTimes()
    with times.stage("imports"):
        import torch

    dataset_id, dataset_name = resolve_dataset(dataset_id, need_raw=False)
    model = model_folder(dataset_name, trainer, plans, configuration)
    missing = [f for f in folds if not (model / f"fold_{f}" / checkpoint).is_file()]
    if missing:
        paths = ", ".join(str(model / f"fold_{f}" / checkpoint) for f in missing)
        check_folds(dataset_name, missing)  # a fold that `teachformer train` refuses is not worth suggesting
        trained = trained_folds(model, checkpoint)
        hint = (f"Trained folds of this model: {' '.join(trained)}; pick them with -f {' '.join(trained)}, or train "
                f"the others" if trained else "Train them")
        commands = "; ".join(" ".join(train_command(dataset_id, configuration, f, plans, trainer)) for f in missing)
        raise TeachFormerError(f"missing checkpoint(s): {paths}. {hint}: {commands}.")
    for f in folds:
        with times.stage("checks"):
            path = model / f"fold_{f}" / checkpoint
            loaded = check_checkpoint(path, f"retrain it with `"
                                            f"{' '.join(train_command(dataset_id, configuration, f, plans, trainer))}"
                                            f"` (or pick other folds with -f)")
            if mirror_axes is not None:
                mirror_axes = checked_mirror_axes(mirror_axes, loaded.get("inference_allowed_mirroring_axes"), path)
    if not (model / "dataset.json").is_file():
        raise TeachFormerError(f"{model / 'dataset.json'} is missing, so the model's input channels are unknown. "
                               f"nnUNetv2_train writes it; retrain or restore the model folder.")
    input_path, output = Path(input_folder), Path(output_folder)
    if not input_path.is_dir():
        raise TeachFormerError(f"input folder {input_folder} does not exist; it must hold images named "
                               f"CASE_0000.nii.gz ... like imagesTs.")
    dataset_json = json.loads((model / "dataset.json").read_text())
    with times.stage("checks"):
        cases = check_prediction_input(input_path, dataset_json)
    if output.exists() and not output.is_dir():
        raise TeachFormerError(f"output {output} is a file; give a folder for the segmentations.")
    if output.resolve() == input_path.resolve():
        raise TeachFormerError(f"output folder {output} is the input folder; give another folder, so that the "
                               f"segmentations do not mix with the images.")
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device in available and not available[device]():
        raise TeachFormerError(f"--device {device}: no {device.upper()} device is visible to PyTorch "
                               f"{torch.__version__} here. Pass --device cpu (slower), or run on a machine with one.")
    existed_before = {p.name for p in output.iterdir()} if output.is_dir() else None
    check_output_folder(output, cases, dataset_json, save_probabilities, overwrite)
    what, code = ("nnU-Net's prediction" if device == "cpu" else "nnUNetv2_predict"), 0
    pp_file = postprocessing_file(model, folds) if postprocessing else None
    try:
        if device == "cpu":
            predict_on_cpu(model, folds, checkpoint, input_folder, output_folder, save_probabilities, tta,
                           processes or 3, cpu_path, times=times, step_size=step_size, mirror_axes=mirror_axes)
        else:
            command = ["nnUNetv2_predict", "-i", str(input_folder), "-o", str(output_folder), "-d", str(dataset_id),
                       "-c", configuration, "-p", plans, "-tr", trainer, "-f", *map(str, folds), "-chk", checkpoint,
                       "-device", device, "-step_size", str(step_size)]
            command += (["--save_probabilities"] if save_probabilities else []) + ([] if tta else ["--disable_tta"])
            command += ["-npp", str(processes), "-nps", str(processes)] if processes else []
            executable = Path(sys.executable).parent / command[0]
            code = subprocess.call([str(executable) if executable.exists() else command[0]] + command[1:])
        if code == 0 and pp_file is not None:
            what = f"the postprocessing of {pp_file}"
            with times.stage("postprocessing"):
                _postprocess(output, cases, dataset_json, model, pp_file)
    except Exception as e:  # an error inside nnU-Net's predictor: name it, never a traceback
        _undo_output(output, existed_before)
        raise TeachFormerError(f"{what} failed ({type(e).__name__}: {str(e).strip()[:300]}); what it had written "
                               f"to {output} was removed. Fix the cause and run the same command again.") from None
    except BaseException:
        _undo_output(output, existed_before)
        raise
    written = [c for c in cases if (output / (c + dataset_json["file_ending"])).is_file()]
    if code != 0 or len(written) != len(cases):
        _undo_output(output, existed_before)
        problem = f"exit code {code}" if code != 0 else f"it wrote {len(written)} of {len(cases)} segmentations"
        raise TeachFormerError(f"{what} failed ({problem}; see its output above); what it had written to "
                               f"{output} was removed. Fix the cause and run the same command again.")
    if stage_times:
        times.write(stage_times)
        spent = ", ".join(f"{name} {s:.1f}" for name, s in times.seconds.items() if s >= 0.05)
        print(f"Seconds per stage ({stage_times}): {spent}", flush=True)


def predict_on_cpu(model_folder: Path, folds, checkpoint: str, input_folder: str, output_folder: str,
                   save_probabilities: bool, tta: bool, processes: int, path: str = "auto",
                   tolerance: float = DEFAULT_TOLERANCE, log=print, times: Optional[StageTimes] = None,
                   step_size: float = DEFAULT_STEP_SIZE, mirror_axes: Optional[Sequence[int]] = None) -> None:
    """What ``nnUNetv2_predict -device cpu`` does (nnU-Net's predictor, Gaussian weighting, the same files written),
    along ``path``: a name of ``CPU_PATHS``, or ``auto`` for ``path_choice``'s pick among the exact ones.
    ``step_size`` is nnU-Net's tile step (``-step_size``); ``mirror_axes``, with ``tta``, the model's mirroring
    axes to use (default: all it allows). ``processes`` workers preprocess and export, no more than there are cases
    (nnU-Net caps only the preprocessing workers so), each forked from ``worker_start``'s server. ``times`` (one
    of this thread's) receives the seconds per stage."""
    times = times or StageTimes()
    start_fork_server()  # imports what nnU-Net's workers run, on the other core, while this process imports its own
    with times.stage("imports"):
        import torch
        from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

        from nnunet_teachformer.inference.cpu_inference import CpuPredictor, tile_forwards, use_path
        from nnunet_teachformer.inference.cpu_paths import CPU_PATHS
        from nnunet_teachformer.inference.path_choice import remembered_or_chosen_cpu_path

    predictor = CpuPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=tta,
                             perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.stage_times = times
    with times.stage("initialise"):
        predictor.initialize_from_trained_model_folder(str(model_folder), tuple(folds), checkpoint)
    if tta and mirror_axes is not None:  # checked against the model's axes by teachformer predict
        predictor.allowed_mirroring_axes = tuple(mirror_axes)
    cases = create_lists_from_splitted_dataset_folder(str(input_folder), predictor.dataset_json["file_ending"])
    if path == "auto":
        with times.stage("path_choice"):
            first_fold = Path(model_folder) / f"fold_{folds[0]}" / checkpoint
            log(remembered_or_chosen_cpu_path(predictor, tile_forwards(predictor, cases) * len(folds), first_fold,
                                              tolerance).summary())
    else:
        use_path(predictor, CPU_PATHS[path], load=False)  # built while nnU-Net's workers preprocess the first case
        log(f"CPU path: {path} ({CPU_PATHS[path].description}), as asked")
        if CPU_PATHS[path].precision == "bf16":
            from nnunet_teachformer.inference.openvino_engine import cpu_has_bfloat16
            if not cpu_has_bfloat16():
                log("This CPU has no bfloat16 instructions (AVX512-BF16 or AMX): OpenVINO computes in float32, "
                    "as the openvino path does.")
    with times.stage("export_wait"), nnunet_workers_forked():  # what the stages inside (preprocessing, ...) leave
        predictor.predict_from_files(str(input_folder), str(output_folder), save_probabilities=save_probabilities,
                                     overwrite=True, num_processes_preprocessing=processes,
                                     num_processes_segmentation_export=max(1, min(processes, len(cases))))
