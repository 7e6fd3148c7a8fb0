"""The cross-validation protocol: model selection never sees the fold's validation cases, an early-stopped fold
stays stopped, and every model records its provenance (through the real nnUNetv2_train)."""
import json
import shutil

import numpy as np
import SimpleITK as sitk
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from conftest import (DATASET_NAME, TEACHFORMER_PLANS, model_folder, probe_env, run_cli, train_command)


def _fold0_split(preprocessed):
    return json.loads((preprocessed / DATASET_NAME / "splits_final.json").read_text())[0]


def _blank_labels(preprocessed, cases):
    """Replaces the labels of ``cases`` by background, in the preprocessed data and nnU-Net's gt_segmentations."""
    base = preprocessed / DATASET_NAME
    plans = json.loads((base / f"{TEACHFORMER_PLANS}.json").read_text())
    data = base / plans["configurations"]["3d_fullres"]["data_identifier"]
    for case in cases:
        seg = np.asarray(nnUNetDatasetBlosc2(str(data), [case]).load_case(case)[1])
        nnUNetDatasetBlosc2.save_seg(np.zeros_like(seg), str(data / f"{case}_seg"))
        gt = sitk.ReadImage(str(base / "gt_segmentations" / f"{case}.nii.gz"))
        blank = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(gt)))
        blank.CopyInformation(gt)
        sitk.WriteImage(blank, str(base / "gt_segmentations" / f"{case}.nii.gz"))


def test_validation_labels_change_neither_the_stop_nor_the_selected_weights(phantom, nnunet_dirs, tmp_path):
    preprocessed = nnunet_dirs["nnUNet_preprocessed"]
    blanked = tmp_path / "preprocessed_blanked_validation"
    folds = {}
    for name, source in (("original", preprocessed), ("blanked", blanked)):
        if name == "blanked":  # after the first run, which made nnU-Net's split if there was none
            validation = _fold0_split(preprocessed)["val"]
            shutil.copytree(preprocessed / DATASET_NAME, blanked / DATASET_NAME)
            _blank_labels(blanked, validation)
        results = tmp_path / f"results_{name}"
        run_cli(train_command("SeededSelectionProbeTrainer"),
                env=probe_env(nnUNet_preprocessed=source, nnUNet_results=results, nnUNet_n_proc_DA=0))
        folds[name] = model_folder(results, "SeededSelectionProbeTrainer") / "fold_0"

    final = {k: torch.load(f / "checkpoint_final.pth", map_location="cpu", weights_only=False) for k, f in folds.items()}
    assert final["original"]["current_epoch"] == final["blanked"]["current_epoch"]
    assert final["original"]["logging"]["ema_fg_dice"] == final["blanked"]["logging"]["ema_fg_dice"]
    for key, value in final["original"]["network_weights"].items():
        assert torch.equal(value, final["blanked"]["network_weights"][key]), key

    record = json.loads((folds["original"] / "provenance.json").read_text())
    assert record["validation_cases"] == sorted(validation)
    assert record["selection_cases"] and not set(record["selection_cases"]) & set(validation)
    assert not set(record["training_cases"]) & (set(validation) | set(record["selection_cases"]))

    # nnU-Net's final validation did see the blanked labels: the check above compared runs that differ there
    summaries = {k: json.loads((f / "validation" / "summary.json").read_text()) for k, f in folds.items()}
    reference_voxels = {k: sum(c["metrics"]["1"]["n_ref"] for c in s["metric_per_case"]) for k, s in summaries.items()}
    assert reference_voxels["original"] > 0 and reference_voxels["blanked"] == 0


def test_continue_after_an_early_stop_trains_no_further(phantom, tmp_path):
    env = probe_env(nnUNet_results=tmp_path / "results")
    run_cli(train_command("EarlyStopProbeTrainer"), env=env)
    fold = model_folder(tmp_path / "results", "EarlyStopProbeTrainer") / "fold_0"
    first = (fold / "checkpoint_final.pth").read_bytes()
    # scripted EMA: 0.5, 0.54 (best), 0.496, 0.4474 -> two epochs without improvement after epoch 1 -> stop after 3
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    best = torch.load(fold / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 4 and len(final["logging"]["ema_fg_dice"]) == 4
    assert np.isclose(best["_best_ema"], 0.54)
    assert all(torch.equal(final["network_weights"][k], v) for k, v in best["network_weights"].items())

    run_cli(train_command("EarlyStopProbeTrainer", 0, TEACHFORMER_PLANS, "--c"), env=env)
    assert (fold / "checkpoint_final.pth").read_bytes() == first
    assert not (fold / "checkpoint_latest.pth").exists()
    logs = sorted(fold.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime)
    assert "nothing more to train" in logs[-1].read_text()
    assert "Epoch 4" not in "".join(log.read_text() for log in logs)
