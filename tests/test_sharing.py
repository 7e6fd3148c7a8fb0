"""A distilled student shared like any nnU-Net model: `teachformer export --zip` (nnU-Net's own export plus the
model card and the teacher records), installed with `nnUNetv2_install_pretrained_model_from_zip` into an empty
nnUNet_results of the fresh environment that has only the wheel installed (installed_package.py), and predicted
there by `nnUNetv2_predict` with no teacher and no nnUNet_raw/nnUNet_preprocessed: the segmentations equal
those predicted from the original model folder.

Uses the session's `trained` study (its tiny distilled student, fold 0), which the CI run trains anyway for
the export and report tests: a real distilled student with its teacher records, at no extra training cost.
"""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DATASET_ID, DATASET_NAME, console_script, run_cli
from installed_package import archive_names, installed_package

TRAINER = "TeachFormerTrainer_tiny"
PLANS, CONFIG = "TeachFormerPlans", "3d_fullres"
MODEL = f"{DATASET_NAME}/{TRAINER}__{PLANS}__{CONFIG}"
PREDICT_ARGS = ["-d", DATASET_ID, "-c", CONFIG, "-p", PLANS, "-tr", TRAINER, "-f", "0", "-device", "cpu",
                "--disable_tta"]


@pytest.fixture(scope="module")
def exported(trained, nnunet_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharing")
    ours, plain = out / "student.zip", out / "nnunet_plain.zip"
    stdout = run_cli([console_script("teachformer"), "export", "-d", DATASET_ID, "--zip", ours, "-tr", TRAINER]).stdout
    run_cli([console_script("nnUNetv2_export_model_to_zip"), "-d", DATASET_ID, "-o", plain, "-c", CONFIG, "-tr",
             TRAINER, "-p", PLANS, "-f", "0"])
    return {"zip": ours, "plain": plain, "stdout": stdout, "folder": trained["folders"][TRAINER]}


@pytest.fixture(scope="module")
def received(exported, phantom, tmp_path_factory):
    """The zip installed and predicted in the fresh environment, with nothing but the zip and two images."""
    package = installed_package(tmp_path_factory)
    root = tmp_path_factory.mktemp("receiver")
    results, images, output = root / "nnUNet_results", root / "images", root / "predicted"
    results.mkdir()
    shutil.copytree(phantom / "imagesTs", images)
    env = dict(nnUNet_results=results, nnUNet_raw=None, nnUNet_preprocessed=None)
    package.console_script("nnUNetv2_install_pretrained_model_from_zip", exported["zip"], **env)
    package.console_script("nnUNetv2_predict", "-i", images, "-o", output, *PREDICT_ARGS, **env)
    return {"results": results, "output": output, "images": images}


def _segmentations(folder):
    files = sorted(folder.glob("*.nii.gz"))
    return {f.name: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in files}


def test_zip_is_nnunets_own_export_plus_card_and_teacher_records(exported):
    ours, plain = set(archive_names(exported["zip"])), set(archive_names(exported["plain"]))
    assert f"{MODEL}/fold_0/checkpoint_final.pth" in plain and f"{MODEL}/plans.json" in plain
    assert plain <= ours
    assert ours - plain == {f"{MODEL}/MODEL_CARD.md", f"{MODEL}/model_card.json", f"{MODEL}/fold_0/teachers.json"}
    assert str(exported["zip"]) in exported["stdout"]


def test_receiver_predicts_the_same_segmentation_without_teachers_or_training_data(received, exported, nnunet_dirs,
                                                                                   tmp_path):
    # only the shared model is there: no teacher's folder, no raw or preprocessed data
    installed = received["results"] / DATASET_NAME
    assert [p.name for p in installed.iterdir()] == [f"{TRAINER}__{PLANS}__{CONFIG}"]
    for name in ("MODEL_CARD.md", "model_card.json"):
        assert (installed.parent / MODEL / name).read_bytes() == (exported["folder"] / name).read_bytes()
    original = tmp_path / "original"
    run_cli([console_script("nnUNetv2_predict"), "-i", received["images"], "-o", original, *PREDICT_ARGS])
    theirs, ours = _segmentations(received["output"]), _segmentations(original)
    assert sorted(theirs) == ["PHANTOM_010.nii.gz", "PHANTOM_011.nii.gz"] and sorted(ours) == sorted(theirs)
    for name in ours:
        assert np.array_equal(theirs[name], ours[name]), name
        assert set(np.unique(ours[name])) <= {0, 1, 2}


def test_model_card_states_teachers_metrics_cost_and_input(exported, nnunet_dirs):
    folder = exported["folder"]
    card = json.loads((folder / "model_card.json").read_text())
    markdown = (folder / "MODEL_CARD.md").read_text()
    assert card["model"]["trainer"] == TRAINER and card["model"]["folds"] == [0] and card["model"]["distilled"]

    teachers = json.loads((folder / "fold_0" / "teachers.json").read_text())
    assert card["teachers"] == {"0": teachers} and teachers
    for teacher in teachers:
        assert f"`{teacher['trainer']}`" in markdown

    summary = json.loads((folder / "fold_0" / "validation" / "summary.json").read_text())
    dice = card["validation_dice"]
    assert dice["per_fold"]["0"]["foreground_mean"] == pytest.approx(summary["foreground_mean"]["Dice"])
    assert dice["foreground_mean"] == {"mean": pytest.approx(summary["foreground_mean"]["Dice"]), "sd": None,
                                       "folds": 1}
    assert list(dice["labels"]) == ["GTVp", "GTVn"]
    assert dice["labels"]["GTVn"]["mean"] == pytest.approx(summary["mean"]["2"]["Dice"])
    assert f"{summary['foreground_mean']['Dice'] * 100:.1f}" in markdown

    weights = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    # nnU-Net's predictor loads these weights strictly into the network the card counts (integer buffers aside)
    assert card["complexity"]["parameters"] == sum(w.numel() for w in weights.values() if w.is_floating_point())
    assert card["complexity"]["gflops"] > 0

    timing = card["cpu_time_per_case"]
    validation_cases = sorted(c["prediction_file"].rsplit("/", 1)[-1][:-len(".nii.gz")]
                              for c in summary["metric_per_case"])
    assert timing["seconds"] > 0 and timing["case"] == validation_cases[0] and timing["mirroring"]

    plans = json.loads((folder / "plans.json").read_text())["configurations"][CONFIG]
    assert card["input"]["spacing"] == plans["spacing"] and card["input"]["patch_size"] == plans["patch_size"]
    assert [c["name"] for c in card["input"]["channels"]] == ["CT", "PET"]
    assert card["input"]["labels"] == {"background": 0, "GTVp": 1, "GTVn": 2}
    assert "NOT FOR CLINICAL USE" in markdown and "## Intended use" in markdown
    assert card["not_for_clinical_use"].startswith("NOT FOR CLINICAL USE")


def test_export_of_a_missing_fold_names_it_and_writes_nothing(exported, tmp_path):
    out = tmp_path / "x.zip"
    result = run_cli([console_script("teachformer"), "export", "-d", DATASET_ID, "--zip", out, "-tr", TRAINER,
                      "-f", "0", "1"], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "fold_1/checkpoint_final.pth" in result.stderr and "-f" in result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
