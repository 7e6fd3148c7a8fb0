"""Teachers that are known to be good, through the real commands: a good teacher (``GoodTeacherProbeTrainer``:
nnU-Net's U-Net that segments the phantom after a few iterations) and a broken one (``BrokenTeacherProbeTrainer``:
the same with learning rate 0) train with ``nnUNetv2_train`` on fold 0 of the session's phantom, in a private
results tree. A distilled student (``EqualStudentProbeTrainer``: ``TeachFormerTrainer_tiny`` training one
iteration) starts from both through ``nnUNetv2_train`` (``TEACHFORMER_TEACHERS``);
``TeachFormerTrainer_diceWeighted_tiny`` and ``_dropFailed_tiny`` start in process (their start is where teachers
are measured and weighted; the first runs one training step with its weights). Each measures both teachers on its
inner hold-out: the broken one is a WARNING in the log, the Dice and the cases are in ``teachers.json``, and the
weights follow the weighting. The good teacher's recorded Dice is what ``nnUNetv2_predict`` and nnU-Net's
evaluation give on the same cases."""
import json
import os
import re
import shutil

import pytest
import torch

from conftest import (CONFIG, DATASET_ID, DATASET_NAME, TEACHFORMER_PLANS, console_script, model_folder, probe_env,
                      run_cli, train_command)
from nnunet_teachformer.distillation.provenance import recorded_teachers
from nnunet_teachformer.trainers import (TeachFormerTrainer_diceWeighted_tiny, TeachFormerTrainer_dropFailed_tiny,
                                        TeachFormerTrainer_tiny)

GOOD, BROKEN = "GoodTeacherProbeTrainer", "BrokenTeacherProbeTrainer"
STUDENT = "EqualStudentProbeTrainer"
WARNING = re.compile(rf"WARNING: teacher {BROKEN} failed on the inner hold-out: foreground Dice ([\d.]+), below 0.5 x "
                     rf"the best teacher's \({GOOD}, ([\d.]+)\)\. Its weight \((\w+)\): ([\d.]+)")


class _NoHoldoutStudent(TeachFormerTrainer_tiny):
    early_stopping_patience = None  # nnU-Net's own split and selection: no inner hold-out


def _fold(results, trainer) -> dict:
    fold = model_folder(results, trainer) / "fold_0"
    return {"log": next(fold.glob("training_log_*.txt")).read_text(),
            "teachers": {t["trainer"]: t for t in json.loads((fold / "teachers.json").read_text())},
            "provenance": json.loads((fold / "provenance.json").read_text())}


def _start_in_process(cls, monkeypatch, env):
    for key in ("nnUNet_results", "nnUNet_extTrainer", "TEACHFORMER_TEACHERS"):
        monkeypatch.setenv(key, env[key])
    base = os.path.join(os.environ["nnUNet_preprocessed"], DATASET_NAME)
    with open(os.path.join(base, f"{TEACHFORMER_PLANS}.json")) as f:
        plans = dict(json.load(f), continue_training=False)
    with open(os.path.join(base, "dataset.json")) as f:
        student = cls(plans, CONFIG, 0, json.load(f), torch.device("cpu"))
    student.on_train_start()
    return student


@pytest.fixture(scope="module")
def taught(phantom, tmp_path_factory):
    results = tmp_path_factory.mktemp("teacher_quality") / "results"
    env = probe_env(nnUNet_results=results, TEACHFORMER_TEACHERS=f"{GOOD},{BROKEN}")
    for teacher in (GOOD, BROKEN):
        run_cli(train_command(teacher), env=env)
    stdout = run_cli(train_command(STUDENT), env=env).stdout
    return {"results": results, "env": env, "stdout": stdout, "equal": _fold(results, STUDENT)}


def test_the_broken_teacher_is_measured_and_a_warning(taught):
    run = taught["equal"]
    good, broken = run["teachers"][GOOD], run["teachers"][BROKEN]
    print(f"inner-hold-out foreground Dice: {GOOD} {good['inner_holdout_dice']:.4f}, "
          f"{BROKEN} {broken['inner_holdout_dice']:.4f}")
    selection, validation = run["provenance"]["selection_cases"], run["provenance"]["validation_cases"]
    assert good["inner_holdout_cases"] == broken["inner_holdout_cases"] == selection
    assert selection and not set(selection) & set(validation)  # never the fold's validation cases
    assert good["inner_holdout_dice"] > 0.05
    assert broken["inner_holdout_dice"] < 0.5 * good["inner_holdout_dice"]
    assert (good["failed"], broken["failed"]) == (False, True)
    assert (good["weight"], broken["weight"]) == (0.5, 0.5)  # equal, the paper's average, as by default
    assert "inner_holdout_note" not in good  # trained on none of these cases: nothing to qualify

    warning = WARNING.search(run["log"])
    assert warning, run["log"][-3000:]
    assert float(warning.group(1)) == pytest.approx(broken["inner_holdout_dice"], abs=5e-4)
    assert float(warning.group(2)) == pytest.approx(good["inner_holdout_dice"], abs=5e-4)
    assert warning.group(3, 4) == ("equal", "0.500") and "check or retrain it" in run["log"]
    assert warning.group(0) in taught["stdout"]  # print_to_log_file prints it too
    assert f"WARNING: teacher {GOOD}" not in run["log"]


def test_the_teacher_set_stays_the_runs_identity(taught):
    """The identity check of a continued run (``_check_teacher_set``) reads the richer record as before."""
    assert recorded_teachers(model_folder(taught["results"], STUDENT) / "fold_0") == \
        [(GOOD, "checkpoint_final.pth"), (BROKEN, "checkpoint_final.pth")]


def test_dice_weighting_weights_the_teachers_by_their_dice(taught, monkeypatch):
    student = _start_in_process(TeachFormerTrainer_diceWeighted_tiny, monkeypatch, taught["env"])
    run = _fold(taught["results"], "TeachFormerTrainer_diceWeighted_tiny")
    good, broken = run["teachers"][GOOD], run["teachers"][BROKEN]
    equal = taught["equal"]["teachers"]  # the same teachers on the same cases, whatever the weighting
    assert (good["inner_holdout_dice"], broken["inner_holdout_dice"]) == \
        (equal[GOOD]["inner_holdout_dice"], equal[BROKEN]["inner_holdout_dice"])
    assert good["weight"] + broken["weight"] == pytest.approx(1.0)
    assert good["weight"] / broken["weight"] == pytest.approx(good["inner_holdout_dice"] / broken["inner_holdout_dice"])
    assert student.teachers.weights == pytest.approx([good["weight"], broken["weight"]])  # what the losses use
    assert WARNING.search(run["log"]).group(3) == "dice"
    student.network.train()
    losses = student.train_step(next(student.dataloader_train))  # L_AFS and L_PWD with these weights
    assert all(float(losses[k]) > 0 for k in ("train_l_afs", "train_l_pwd"))


def test_drop_failed_leaves_the_broken_teacher_out(taught, monkeypatch):
    student = _start_in_process(TeachFormerTrainer_dropFailed_tiny, monkeypatch, taught["env"])
    run = _fold(taught["results"], "TeachFormerTrainer_dropFailed_tiny")
    assert (run["teachers"][GOOD]["weight"], run["teachers"][BROKEN]["weight"]) == (1.0, 0.0)
    assert [t.ref.trainer for t in student.teachers.teachers] == [GOOD]  # the broken one is not even run
    assert WARNING.search(run["log"]).group(3, 4) == ("drop_failed", "0.000")
    assert "0.000: left out." in run["log"]


def test_without_an_inner_holdout_nothing_is_measured_and_the_record_says_why(taught, monkeypatch):
    student = _start_in_process(_NoHoldoutStudent, monkeypatch, taught["env"])
    run = _fold(taught["results"], "_NoHoldoutStudent")
    for teacher in run["teachers"].values():
        assert (teacher["inner_holdout_dice"], teacher["inner_holdout_cases"], teacher["failed"], teacher["weight"]) \
            == (None, [], False, 0.5)
        assert teacher["inner_holdout_note"].startswith("not measured: no inner hold-out")
    assert "(0 of 0 cases; " in run["log"] and "WARNING" not in run["log"]
    assert student.teachers.weights is None  # the plain average


def test_the_recorded_dice_is_nnunets_prediction_and_evaluation(taught, phantom, tmp_path):
    """The good teacher on its inner-hold-out cases through nnUNetv2_predict (no mirroring) and nnU-Net's evaluation
    against the raw labels: the foreground Dice the student recorded from the preprocessed cases. The student runs
    its teachers on its own patch (64^3; this teacher trained on 32^3), so the copy predicted here has that patch."""
    record = taught["equal"]["teachers"][GOOD]
    teacher = model_folder(tmp_path / "results", GOOD)
    shutil.copytree(model_folder(taught["results"], GOOD), teacher)
    plans = json.loads((teacher / "plans.json").read_text())
    student_plans = json.loads((model_folder(taught["results"], STUDENT) / "plans.json").read_text())
    plans["configurations"][CONFIG]["patch_size"] = student_plans["configurations"][CONFIG]["patch_size"]
    (teacher / "plans.json").write_text(json.dumps(plans))
    images = tmp_path / "images"
    images.mkdir()
    for case in record["inner_holdout_cases"]:
        for image in (phantom / "imagesTr").glob(f"{case}_*.nii.gz"):
            shutil.copy(image, images)
    env = dict(taught["env"], nnUNet_results=str(tmp_path / "results"))
    predicted = tmp_path / "predicted"
    run_cli([console_script("nnUNetv2_predict"), "-i", images, "-o", predicted, "-d", DATASET_ID, "-c", CONFIG, "-p",
             TEACHFORMER_PLANS, "-tr", GOOD, "-f", 0, "--disable_tta", "-device", "cpu", "-npp", 1, "-nps", 1], env=env)
    run_cli([console_script("nnUNetv2_evaluate_folder"), phantom / "labelsTr", predicted, "-djfile",
             phantom / "dataset.json", "-pfile", predicted / "plans.json", "-np", 1, "--chill"], env=env)
    summary = json.loads((predicted / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == len(record["inner_holdout_cases"])
    assert record["inner_holdout_dice"] == pytest.approx(summary["foreground_mean"]["Dice"], abs=1e-6)
