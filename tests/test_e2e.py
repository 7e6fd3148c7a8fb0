"""End to end through the real nnU-Net CLI on the phantom: train every architecture and the distilled
student (fold 0, tiny presets, CPU), predict held-out cases, evaluate, and the teacher guards."""
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import (CONFIG, DATASET_ID, DATASET_NAME, DIRECT_TRAINERS, STUDY_TRAINERS, TEACHFORMER_PLANS,
                      console_script, model_folder, run_cli)
from nnunet_teachformer.inference.cpu_paths import CPU_PATHS


def _predict_and_evaluate(phantom, tmp_path, trainer, env=None):
    """nnUNetv2_predict in its sequential mode (-npp 0 -nps 0: no worker processes, each of which would import
    nnU-Net for ~10 s to export two small cases), then nnUNetv2_evaluate_folder."""
    out = tmp_path / trainer
    run_cli([console_script("nnUNetv2_predict"), "-i", phantom / "imagesTs", "-o", out, "-d", DATASET_ID, "-c", CONFIG,
             "-p", TEACHFORMER_PLANS, "-tr", trainer, "-f", 0, "-device", "cpu", "-npp", 0, "-nps", 0], env=env)
    run_cli([console_script("nnUNetv2_evaluate_folder"), phantom / "labelsTs", out, "-djfile",
             out / "dataset.json", "-pfile", out / "plans.json", "-np", 1])
    return out


def _dice(prediction_file, reference_file, label):
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_file))) == label
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_file))) == label
    total = prediction.sum() + reference.sum()
    return 2 * np.logical_and(prediction, reference).sum() / total if total else math.nan


def _check_summary(summary, prediction_folder, reference_folder):
    """Every per-case Dice of nnU-Net's summary.json, recomputed from the files the summary names."""
    for case in summary["metric_per_case"]:
        name = os.path.basename(case["prediction_file"])
        assert os.path.basename(case["reference_file"]) == name
        for label in (1, 2):
            expected = _dice(prediction_folder / name, reference_folder / name, label)
            assert np.isclose(case["metrics"][str(label)]["Dice"], expected, equal_nan=True), (name, label)


@pytest.mark.parametrize("trainer", DIRECT_TRAINERS + STUDY_TRAINERS)
def test_trains_predicts_and_evaluates(trained, phantom, tmp_path, trainer, nnunet_dirs):
    fold = trained["folders"][trainer] / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    preprocessed = nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME
    validation = json.loads((preprocessed / "splits_final.json").read_text())[0]["val"]
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert sorted(os.path.basename(c["prediction_file"])[:-len(".nii.gz")] for c in summary["metric_per_case"]) == \
        sorted(validation)  # the final validation scores exactly the fold's validation cases
    _check_summary(summary, fold / "validation", preprocessed / "gt_segmentations")
    record = json.loads((fold / "provenance.json").read_text())
    assert record["validation_cases"] == sorted(validation) and not set(record["selection_cases"]) & set(validation)

    out = _predict_and_evaluate(phantom, tmp_path, trainer)
    for image in sorted((phantom / "imagesTs").glob("*_0000.nii.gz")):
        case = image.name[:-len("_0000.nii.gz")]
        source, prediction = sitk.ReadImage(str(image)), sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert prediction.GetSize() == source.GetSize()
        assert np.allclose(prediction.GetSpacing(), source.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), source.GetOrigin())
        assert np.allclose(prediction.GetDirection(), source.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}
    held_out = json.loads((out / "summary.json").read_text())
    assert len(held_out["metric_per_case"]) == len(list((phantom / "imagesTs").glob("*_0000.nii.gz")))
    _check_summary(held_out, out, phantom / "labelsTs")


def test_study_skipped_finished_teachers_and_trained_the_students(trained):
    output = trained["study_output"]
    for teacher in ("HDenseFormerTrainer_tiny", "SwinUNETRTrainer_tiny", "UNETRTrainer_tiny"):
        assert re.search(rf"\[done\]\s+{teacher} fold 0", output), output
    assert "baseline HDenseFormerLightTrainer_tiny fold 0" in output
    assert "distilled TeachFormerTrainer_tiny fold 0" in output


def test_distilled_log_has_three_finite_losses_and_checkpoint_has_only_the_student(trained):
    fold = trained["folders"]["TeachFormerTrainer_tiny"] / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    for key in ("train_l_seg", "train_l_afs", "train_l_pwd"):
        values = checkpoint["logging"][key]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), (key, values)
    assert checkpoint["logging"]["train_l_afs"][0] > 0 and checkpoint["logging"]["train_l_pwd"][0] > 0
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert len(re.findall(r"L_SEG [\d.]+ L_AFS [\d.]+ L_PWD [\d.]+", log)) == 2
    assert "HDenseFormerTrainer_tiny" in log and "SwinUNETRTrainer_tiny" in log and "UNETRTrainer_tiny" in log
    baseline = torch.load(trained["folders"]["HDenseFormerLightTrainer_tiny"] / "fold_0" / "checkpoint_final.pth",
                          map_location="cpu", weights_only=False)
    assert checkpoint["network_weights"].keys() == baseline["network_weights"].keys()
    assert checkpoint["trainer_name"] == "TeachFormerTrainer_tiny"
    taught = json.loads((fold / "teachers.json").read_text())
    assert sorted((t["trainer"], t["provenance"]) for t in taught) == \
        [(t, "recorded") for t in ("HDenseFormerTrainer_tiny", "SwinUNETRTrainer_tiny", "UNETRTrainer_tiny")]


def test_distilled_student_predicts_without_teachers(trained, phantom, tmp_path, nnunet_dirs):
    results = tmp_path / "results_without_teachers"
    shutil.copytree(model_folder(nnunet_dirs["nnUNet_results"], "TeachFormerTrainer_tiny"),
                    model_folder(results, "TeachFormerTrainer_tiny"))
    env = dict(os.environ, nnUNet_results=str(results))
    out = _predict_and_evaluate(phantom, tmp_path, "TeachFormerTrainer_tiny", env=env)
    cases = sorted(p.name for p in out.glob("PHANTOM_*.nii.gz"))
    assert len(cases) == len(list((phantom / "imagesTs").glob("*_0000.nii.gz")))

    # `teachformer predict --device cpu` takes its fastest exact CPU path, says which, and segments as nnU-Net does
    ours = tmp_path / "teachformer_predict"
    printed = run_cli([console_script("teachformer"), "predict", "-i", phantom / "imagesTs", "-o", ours, "-d",
                       DATASET_ID, "-f", 0, "-tr", "TeachFormerTrainer_tiny", "--device", "cpu"], env=env).stdout
    path = re.search(r"CPU path: (\w+) \(.* max \|logit difference\| \S+ \(tolerance 0.001\)", printed)
    assert path and path.group(1) in CPU_PATHS, printed
    for case in cases:
        expected, got = (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case))) for folder in (out, ours))
        # nnU-Net's own path is nnUNetv2_predict itself; another path may flip a voxel whose classes tie
        assert np.array_equal(expected, got) if path.group(1) == "nnunet" else np.mean(expected == got) > 0.999, case


def test_nnunet_unet_and_a_transformer_teach_together(trained, phantom, tmp_path, nnunet_dirs):
    """nnU-Net's own U-Net (tiny widths) and UNETR teach one student; it predicts with no teacher around."""
    results = tmp_path / "results"
    for teacher in ("UNetTrainer_tiny", "UNETRTrainer_tiny"):
        model_folder(results, teacher).parent.mkdir(parents=True, exist_ok=True)
        model_folder(results, teacher).symlink_to(trained["folders"][teacher], target_is_directory=True)
    env = dict(os.environ, nnUNet_results=str(results), TEACHFORMER_TEACHERS="UNetTrainer_tiny,UNETRTrainer_tiny")
    run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 0, "-p", TEACHFORMER_PLANS, "-tr",
             "TeachFormerTrainer_tiny", "-device", "cpu"], env=env)
    student = model_folder(results, "TeachFormerTrainer_tiny")
    taught = json.loads((student / "fold_0" / "teachers.json").read_text())
    assert [(t["trainer"], t["provenance"]) for t in taught] == [("UNetTrainer_tiny", "recorded"),
                                                                  ("UNETRTrainer_tiny", "recorded")]
    log = next((student / "fold_0").glob("training_log_*.txt")).read_text()
    assert "UNetTrainer_tiny__" in log and len(re.findall(r"L_SEG [\d.]+ L_AFS [\d.]+ L_PWD [\d.]+", log)) == 2

    alone = tmp_path / "results_student_only"
    shutil.copytree(student, model_folder(alone, "TeachFormerTrainer_tiny"))
    out = _predict_and_evaluate(phantom, tmp_path, "TeachFormerTrainer_tiny",
                                env=dict(os.environ, nnUNet_results=str(alone)))
    held_out = json.loads((out / "summary.json").read_text())
    _check_summary(held_out, out, phantom / "labelsTs")


def _distil(results_root, trainer="TeachFormerTrainer_UNETRTeacher_tiny"):
    env = dict(os.environ, nnUNet_results=str(results_root))
    return run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 0, "-p", TEACHFORMER_PLANS, "-tr", trainer,
                    "-device", "cpu"], env=env, check=False)


def test_missing_teacher_is_refused_with_the_command_that_trains_it(trained, tmp_path):
    result = _distil(tmp_path / "empty_results")
    assert result.returncode != 0
    assert not model_folder(tmp_path / "empty_results", "TeachFormerTrainer_UNETRTeacher_tiny").exists()
    assert "Traceback" not in result.stderr
    assert "UNETRTrainer_tiny" in result.stderr and "does not exist" in result.stderr
    assert f"nnUNetv2_train {DATASET_ID} {CONFIG} 0 -p {TEACHFORMER_PLANS} -tr UNETRTrainer_tiny" in result.stderr


def test_teacher_from_another_fold_is_refused(trained, tmp_path, nnunet_dirs):
    """A real fold-1 teacher, with its record, placed where the fold-0 teacher belongs: it learnt from fold 0's
    validation cases."""
    results = tmp_path / "results"
    env = dict(os.environ, nnUNet_results=str(results))
    run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 1, "-p", TEACHFORMER_PLANS, "-tr",
             "UNETRTrainer_tiny", "-device", "cpu"], env=env)
    teacher = model_folder(results, "UNETRTrainer_tiny")
    shutil.copytree(teacher / "fold_1", teacher / "fold_0")
    result = _distil(results)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "record says fold 1" in result.stderr and "validation cases" in result.stderr
    assert str(teacher / "fold_0" / "checkpoint_final.pth") in result.stderr


def test_teacher_with_other_plans_is_refused(trained, tmp_path, nnunet_dirs):
    results = tmp_path / "results"
    source = model_folder(nnunet_dirs["nnUNet_results"], "UNETRTrainer_tiny") / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    checkpoint["init_args"]["plans"]["configurations"][CONFIG]["patch_size"] = [16, 16, 16]
    target = model_folder(results, "UNETRTrainer_tiny") / "fold_0"
    target.mkdir(parents=True)
    torch.save(checkpoint, target / "checkpoint_final.pth")
    result = _distil(results)  # UNETR's weights are for the trained grid: the network cannot be rebuilt on 16^3
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot rebuild the network of" in result.stderr and str(target / "checkpoint_final.pth") in result.stderr


def test_unloadable_teacher_is_refused(trained, tmp_path):
    target = model_folder(tmp_path / "results", "UNETRTrainer_tiny") / "fold_0"
    target.mkdir(parents=True)
    (target / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    result = _distil(tmp_path / "results")
    assert result.returncode != 0 and "cannot load" in result.stderr and "Traceback" not in result.stderr
