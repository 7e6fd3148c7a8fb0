"""``teachformer export``: a trained model as an nnU-Net model zip with its model card (``--zip``), or one fold
of it as an ONNX file checked against PyTorch, with its input contract (``-o``/``--onnx``).

``--zip`` packs the model with nnU-Net's own exporter (``export_pretrained_model``, the code behind
``nnUNetv2_export_model_to_zip``: every fold's checkpoint, progress.png and validation/summary.json, plans,
dataset.json, fingerprint) and adds what nnU-Net does not pack: the model card (``model_card``) and each
fold's ``teachers.json``. ``nnUNetv2_install_pretrained_model_from_zip`` unpacks it into ``$nnUNet_results``,
card included, and ``nnUNetv2_predict`` runs it with only this package installed: the student's checkpoint
is a plain nnU-Net checkpoint, and prediction needs neither the teachers nor the training data. The zip is
written under a temporary name and renamed when complete.

The network is rebuilt exactly as ``nnUNetv2_predict`` rebuilds it: ``nnUNetPredictor`` reads the model
folder's ``plans.json`` and ``dataset.json``, calls the checkpoint's trainer class's
``build_network_architecture`` with deep supervision off and loads the checkpoint's weights. It is exported
with PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``; it needs neither
``onnxscript`` nor a second copy of the model graph in memory) at the plans' patch size, with a dynamic
batch axis. The spatial axes are fixed: the transformer paths learned their position embeddings on the
patch grid, and nnU-Net's sliding window only ever feeds whole patches.

onnxruntime (CPU) then runs the file on a random batch of two patches (so the dynamic batch axis is
exercised) and the export fails if any logit differs from PyTorch's by more than ``tolerance``
(default 1e-3 absolute; measured differences are around 1e-5). Next to ``student.onnx``,
``student.json`` records what a deployer must reproduce: axis order, patch size, channel names and each
channel's normalisation with its numbers, the target spacing, the labels, nnU-Net's sliding-window settings
and the measured difference.
"""
import contextlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.nnunet_paths import (check_folds, check_writable, model_folder, refuse_replacing,
                                             resolve_dataset, train_command, trained_folds)
from nnunet_teachformer.optional_imports import optional_import
from nnunet_teachformer.sharing.model_card import NORMALIZATION_RECIPES

DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-3
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def _require_onnx():
    optional_import("onnx", extra="export", purpose="ONNX export")
    return optional_import("onnxruntime", extra="export", purpose="ONNX export")


def load_for_export(folder: Path, fold: Union[int, str], checkpoint: str = "checkpoint_final.pth",
                    fix: str = "train it first"):
    """``nnUNetPredictor`` initialised on CPU from ``folder`` (one fold); TeachFormerError naming the missing file."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    for required in (folder / "plans.json", folder / "dataset.json", folder / f"fold_{fold}" / checkpoint):
        if not required.is_file():
            raise TeachFormerError(f"{required} does not exist, so there is no trained model to export; {fix}.")
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), (fold,), checkpoint)
    network = getattr(predictor.network, "_orig_mod", predictor.network)  # nnUNet_compile may have wrapped it
    return predictor, network.eval()


def export_network(network: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Writes ``network`` as ONNX (TorchScript exporter) with a dynamic batch axis; ``example`` fixes the rest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # shape checks in forward() are traced as constants (intended: the patch is fixed), and InstanceNorm
        # without running statistics is reported as "training mode" although it computes the same in eval
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*instance_norm.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(network, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def onnx_session(path: Path, threads: Optional[int] = None):
    """An onnxruntime CPU session for ``path``; ``threads`` intra-op threads (default: onnxruntime's)."""
    ort = _require_onnx()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_abs_difference(network: torch.nn.Module, path: Path, batch: torch.Tensor) -> float:
    """Largest absolute difference between PyTorch's and onnxruntime's logits for ``batch``."""
    with torch.inference_mode():
        reference = network(batch).float().numpy()
    onnx_logits = onnx_session(path).run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    if onnx_logits.shape != reference.shape:
        return float("inf")
    return float(np.abs(onnx_logits - reference).max())


def input_contract(predictor) -> dict:
    """What a deployer must feed the network and how to read its output, from the model's plans."""
    plans_manager, config, dataset_json = predictor.plans_manager, predictor.configuration_manager, \
        predictor.dataset_json
    intensities = plans_manager.foreground_intensity_properties_per_channel
    channels = []
    for i, (scheme, use_mask) in enumerate(zip(config.normalization_schemes, config.use_mask_for_norm)):
        channel = {"index": i, "name": dataset_json["channel_names"][str(i)], "normalization": scheme,
                   "recipe": NORMALIZATION_RECIPES.get(scheme, "see nnU-Net's normalization scheme of this name"),
                   "use_mask_for_norm": bool(use_mask)}
        if scheme == "CTNormalization":
            channel["intensity_properties"] = {k: float(intensities[str(i)][k])
                                               for k in ("mean", "std", "percentile_00_5", "percentile_99_5")}
        channels.append(channel)
    patch = [int(p) for p in config.patch_size]
    labels = predictor.label_manager
    return {
        "input": {
            "name": INPUT_NAME, "dtype": "float32", "shape": ["batch", len(channels)] + patch,
            "axes": "(batch, channel, *spatial): the spatial axes are the image's axes in nnU-Net's array order "
                    "(SimpleITK z, y, x for NIfTI), permuted by transpose_forward",
            "channels": channels,
            "spacing": [float(s) for s in config.spacing],
            "transpose_forward": [int(a) for a in plans_manager.transpose_forward],
            "transpose_backward": [int(a) for a in plans_manager.transpose_backward],
            "preprocessing": "nnU-Net's (DefaultPreprocessor): transpose, crop to the nonzero region of all channels, "
                             "normalise each channel as listed, resample to `spacing`",
        },
        "output": {
            "name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", labels.num_segmentation_heads] + patch,
            "meaning": "logits; softmax over the channel axis gives class probabilities, argmax the label value",
            "labels": {str(k): v for k, v in dataset_json["labels"].items()},
        },
        "sliding_window": {
            "patch_size": patch, "tile_step_size": 0.5, "gaussian_weighting": True,
            "mirroring_axes_for_tta": None if predictor.allowed_mirroring_axes is None
            else [int(a) for a in predictor.allowed_mirroring_axes],
            "note": "volumes are padded to at least one patch, predicted in overlapping patches weighted by a "
                    "Gaussian (sigma 1/8 of the patch), optionally averaged over mirrored inputs",
        },
    }


def export_student(dataset, fold: Union[int, str], output: Union[str, os.PathLike],
                   trainer: str = "TeachFormerTrainer", plans: str = "TeachFormerPlans",
                   configuration: str = "3d_fullres", opset: int = DEFAULT_OPSET,
                   checkpoint: str = "checkpoint_final.pth", tolerance: float = DEFAULT_TOLERANCE,
                   overwrite: bool = False) -> dict:
    """Exports fold ``fold`` of ``trainer`` to ``output`` (.onnx) and writes its metadata next to it (.json);
    existing files there are replaced only with ``overwrite``.

    Returns the metadata. Raises TeachFormerError if the model is missing or onnxruntime disagrees with PyTorch
    by more than ``tolerance`` (the .onnx is then removed).
    """
    from nnunet_teachformer.inference.predict import check_checkpoint

    ort = _require_onnx()
    if not (str(fold) == "all" or str(fold).isdigit()):
        raise TeachFormerError(f"-f {fold}: give a fold number (0-4) or all.")
    fold = fold if str(fold) == "all" else int(fold)
    _, dataset_name = resolve_dataset(dataset, need_raw=False)
    folder = model_folder(dataset_name, trainer, plans, configuration)
    trained = trained_folds(folder, checkpoint)
    if fold != "all" and str(fold) not in trained:
        try:
            check_folds(dataset_name, [fold])
        except TeachFormerError as e:
            raise TeachFormerError(f"-f {fold}: {e} Trained folds of {folder.name}: "
                                   f"{', '.join(trained) or 'none'}.") from None
    fix = (f"train it with `teachformer train -d {dataset} -f {fold}` (or "
           f"`{' '.join(train_command(dataset, configuration, fold, plans, trainer))}`), or pick the model with "
           f"-tr/-p/-c/-f")
    if Path(output).is_dir():
        raise TeachFormerError(f"-o {output} is a folder; give the ONNX file to write, e.g. "
                               f"{Path(output) / 'student.onnx'}.")
    refuse_replacing([output, Path(output).with_suffix(".json")], overwrite, "-o")
    if (folder / f"fold_{fold}" / checkpoint).is_file():
        check_checkpoint(folder / f"fold_{fold}" / checkpoint, fix.replace("train it", "retrain it", 1))
    predictor, network = load_for_export(folder, fold, checkpoint, fix)

    output = Path(output)
    channels = len(predictor.dataset_json["channel_names"])
    patch = [int(p) for p in predictor.configuration_manager.patch_size]
    generator = torch.Generator().manual_seed(0)
    export_network(network, torch.randn((1, channels, *patch), generator=generator), output, opset)
    check = torch.randn((2, channels, *patch), generator=generator)
    difference = max_abs_difference(network, output, check)
    if not difference <= tolerance:
        output.unlink(missing_ok=True)
        raise TeachFormerError(
            f"onnxruntime's logits differ from PyTorch's by up to {difference:.3g} (> tolerance {tolerance:g}) for "
            f"{folder / f'fold_{fold}' / checkpoint}; {output} was not kept. Try another --opset (now {opset}).")

    checkpoint_path = folder / f"fold_{fold}" / checkpoint
    metadata = {
        "onnx_file": output.name,
        "model": {"dataset": dataset_name, "trainer": predictor.trainer_name, "plans": plans,
                  "configuration": configuration, "fold": fold, "checkpoint": str(checkpoint_path),
                  "parameters": sum(p.numel() for p in network.parameters())},
        **input_contract(predictor),
        "export": {"exporter": "torch.onnx.export (TorchScript-based, dynamo=False)", "opset": opset,
                   "torch": torch.__version__, "onnxruntime": ort.__version__},
        "verification": {"max_abs_logit_difference": difference, "tolerance": tolerance,
                         "input": f"standard normal, seed 0, shape {list(check.shape)}",
                         "runtime": "onnxruntime CPUExecutionProvider"},
    }
    output.with_suffix(".json").write_text(json.dumps(metadata, indent=2))
    return metadata


def _zip_folds(folder: Path, folds: Optional[Sequence], checkpoint: str) -> list:
    """The requested folds, or every fold folder that has ``checkpoint``, in nnU-Net's fold naming."""
    if folds:
        return [f if str(f) == "all" else int(f) for f in folds]
    found = [p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / checkpoint).is_file()]
    return sorted((f if f == "all" else int(f) for f in found), key=lambda f: (f == "all", str(f).zfill(3)))


def export_model_zip(dataset, output: Union[str, os.PathLike], folds: Optional[Sequence] = None,
                     trainer: str = "TeachFormerTrainer", plans: str = "TeachFormerPlans",
                     configuration: str = "3d_fullres", checkpoint: str = "checkpoint_final.pth",
                     timing: bool = True, overwrite: bool = False) -> dict:
    """Writes the model card into the model folder and ``output`` (.zip): nnU-Net's export plus card and teacher
    records. ``folds``: default every fold with ``checkpoint``. A card in the folder that this function did not
    write is replaced only with ``overwrite``. Returns the card."""
    from nnunetv2.model_sharing.model_export import export_pretrained_model
    from nnunetv2.paths import nnUNet_raw

    from nnunet_teachformer.evaluation.results import find_trainer_class
    from nnunet_teachformer.inference.predict import check_checkpoint
    from nnunet_teachformer.sharing.model_card import build_model_card, foreign_card_files, write_model_card
    from nnunet_teachformer.trainers.teachformer import TEACHERS_FILE

    _, dataset_name = resolve_dataset(dataset, need_raw=False)
    folder = model_folder(dataset_name, trainer, plans, configuration)
    train = " ".join(train_command(dataset_name, configuration, "<fold>", plans, trainer))
    folds = _zip_folds(folder, folds, checkpoint)
    if not folds:
        raise TeachFormerError(f"{folder} has no fold with {checkpoint}, so there is no trained model to export; "
                               f"train it first ({train}), or pick the model with -tr/-p/-c.")
    required = [folder / name for name in ("plans.json", "dataset.json", "dataset_fingerprint.json")]
    for fold in folds:
        required += [folder / f"fold_{fold}" / name for name in (checkpoint, "progress.png",
                                                                  os.path.join("validation", "summary.json"))]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise TeachFormerError(
            f"Cannot export {folder.name}: {', '.join(missing)} missing (nnU-Net's export packs them). Finish the "
            f"fold's training ({train}; add --val if only validation/summary.json is missing), "
            f"or leave the fold out with -f.")
    trainer_class = find_trainer_class(trainer)
    if trainer_class is None:
        raise TeachFormerError(f"nnU-Net cannot find the trainer class {trainer} (nnUNet_extTrainer="
                               f"{os.environ.get('nnUNet_extTrainer', '')}); run `eval \"$(teachformer env)\"`.")
    foreign = [] if overwrite else foreign_card_files(folder)
    if foreign:
        raise TeachFormerError(
            f"{' and '.join(map(str, foreign))}: not written by teachformer export (or edited since), and the export "
            f"writes its model card (MODEL_CARD.md, model_card.json) into {folder}. Move your file(s) out of that "
            f"folder to keep them, or add --overwrite to replace them.")
    output = Path(output)
    check_writable(folder, "The export writes its model card into the model folder: make it writable, or "
                           f"copy {folder.parent} into a folder you can write and export with nnUNet_results set to that folder.")
    check_writable(output.parent, "Give --zip a path in a folder you can write.")
    for fold in folds:
        check_checkpoint(folder / f"fold_{fold}" / checkpoint,
                         f"retrain fold {fold} ({train.replace('<fold>', str(fold))}), or export the other folds with -f")

    raw_folder = Path(nnUNet_raw.get(), dataset_name) if nnUNet_raw.is_set() else None
    card = build_model_card(folder, trainer_class, configuration, folds, checkpoint, raw_folder, timing)
    card_paths = write_model_card(folder, card)

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    results_root = folder.parent.parent
    extra = card_paths + [p for fold in folds if (p := folder / f"fold_{fold}" / TEACHERS_FILE).is_file()]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it narrates every fold
            export_pretrained_model(dataset_name, str(partial), configurations=(configuration,), trainer=trainer,
                                    plans_identifier=plans, folds=tuple(folds), strict=True,
                                    save_checkpoints=(checkpoint,))
        with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as archive:
            for path in extra:
                archive.write(path, path.relative_to(results_root).as_posix())
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return card
