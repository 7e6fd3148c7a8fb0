"""The distilled student's checks of its teachers and of itself, in process on the session's trained tiny teachers:
provenance (split, data, teachers without a record, checkpoint_best, fold all), a teacher on another patch, the teacher set as part of a run's identity, options and names
checked when the trainer is built. (tests/test_e2e.py runs the same guards through nnUNetv2_train.)"""
import json
import os
import shutil

import pytest
import torch

from conftest import CONFIG, DATASET_NAME, TEACHFORMER_PLANS, model_folder
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.trainers import TeachFormerTrainer_UNETRTeacher_tiny

TEACHER = "UNETRTrainer_tiny"


class _Student(TeachFormerTrainer_UNETRTeacher_tiny):
    pass


class _StudentWithBadOptions(TeachFormerTrainer_UNETRTeacher_tiny):
    pwd_combination = "median"
    afs_taps = ("middle",)


@pytest.fixture
def scratch(tmp_path, monkeypatch, nnunet_dirs, trained):
    """A private results tree holding a copy of the trained fold-0 UNETR teacher, and a private preprocessed copy."""
    results, preprocessed = tmp_path / "results", tmp_path / "preprocessed"
    shutil.copytree(trained["folders"][TEACHER], model_folder(results, TEACHER))
    shutil.copytree(nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME, preprocessed / DATASET_NAME)
    monkeypatch.setenv("nnUNet_results", str(results))
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.delenv("TEACHFORMER_TEACHERS", raising=False)
    return {"results": results, "preprocessed": preprocessed / DATASET_NAME,
            "teacher_fold": model_folder(results, TEACHER) / "fold_0"}


def _student(cls=_Student):
    base = os.path.join(os.environ["nnUNet_preprocessed"], DATASET_NAME)
    with open(os.path.join(base, f"{TEACHFORMER_PLANS}.json")) as f:
        plans = json.load(f)
    plans["continue_training"] = False
    with open(os.path.join(base, "dataset.json")) as f:
        dataset_json = json.load(f)
    return cls(plans, CONFIG, 0, dataset_json, torch.device("cpu"))


def _refusal(student) -> str:
    with pytest.raises(TeachFormerError) as error:
        student.on_train_start()
    return str(error.value)


def test_teacher_trained_under_another_split_is_refused(scratch):
    splits_file = scratch["preprocessed"] / "splits_final.json"
    splits = json.loads(splits_file.read_text())
    moved = splits[0]["train"][:2]  # the teacher trained on these; the edited split validates on them
    splits[0] = {"train": splits[0]["val"] + splits[0]["train"][2:], "val": moved}
    splits_file.write_text(json.dumps(splits))
    student = _student()
    message = _refusal(student)
    assert "learnt from" in message and moved[0] in message
    assert str(scratch["teacher_fold"] / "checkpoint_final.pth") in message
    assert not os.path.exists(student.output_folder)  # a refused start leaves nothing


def test_teacher_trained_on_other_data_is_refused(scratch):
    fingerprint_file = scratch["preprocessed"] / "dataset_fingerprint.json"
    fingerprint = json.loads(fingerprint_file.read_text())
    fingerprint["spacings"][0] = [2.0, 1.0, 1.0]  # as if one case had been re-converted with other slices
    fingerprint_file.write_text(json.dumps(fingerprint))
    message = _refusal(_student())
    assert "other input data" in message and f"-tr {TEACHER}" in message


def test_teacher_without_a_record_teaches_by_nnunets_split_and_is_marked(scratch):
    (scratch["teacher_fold"] / "provenance.json").unlink()  # as a model trained by nnU-Net itself
    student = _student()
    student.on_train_start()
    with open(os.path.join(student.output_folder, "teachers.json")) as f:
        taught = json.load(f)
    assert [(t["trainer"], t["provenance"]) for t in taught] == [(TEACHER, "derived from nnU-Net's split")]
    assert not (scratch["teacher_fold"] / "provenance.json").exists()  # nothing written into the teacher's folder


def test_teacher_without_a_record_from_another_fold_is_refused_by_the_split(scratch):
    _strip_record_and_set_fold(scratch["teacher_fold"], "checkpoint_final.pth", 1)  # nnU-Net's fold 1, copied here
    splits = json.loads((scratch["preprocessed"] / "splits_final.json").read_text())
    leaked = sorted(set(splits[1]["train"]) & set(splits[0]["val"]))
    message = _refusal(_student())
    assert "learnt from" in message and "its checkpoint says fold 1" in message and "splits_final.json" in message
    assert leaked[0] in message


def _strip_record_and_set_fold(teacher_fold, checkpoint_name, fold):
    (teacher_fold / "provenance.json").unlink(missing_ok=True)
    path = teacher_fold / checkpoint_name
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["init_args"]["fold"] = fold
    torch.save(checkpoint, path)


def test_best_checkpoint_selected_on_the_validation_cases_is_refused(scratch, monkeypatch):
    assert (scratch["teacher_fold"] / "checkpoint_best.pth").is_file()
    _strip_record_and_set_fold(scratch["teacher_fold"], "checkpoint_best.pth", 0)  # nnU-Net's own: no hold-out
    monkeypatch.setenv("TEACHFORMER_TEACHERS", f"{TEACHER}:checkpoint_best.pth")
    message = _refusal(_student())
    assert "selected by nnU-Net on its fold's validation cases" in message and "checkpoint_best.pth" in message
    assert f"{TEACHER}:checkpoint_final.pth" in message


def test_fold_all_teacher_is_refused_for_a_numbered_fold(scratch):
    _strip_record_and_set_fold(scratch["teacher_fold"], "checkpoint_final.pth", "all")  # copied from fold_all
    message = _refusal(_student())
    assert "learnt from" in message and "its checkpoint says fold all" in message
    assert f"nnUNetv2_train 990 {CONFIG} 0 -p {TEACHFORMER_PLANS} -tr {TEACHER}" in message


def test_fixed_grid_teacher_that_cannot_run_on_the_students_patch_is_refused(scratch):
    student_plans = json.loads((scratch["preprocessed"] / f"{TEACHFORMER_PLANS}.json").read_text())
    trained = list(student_plans["configurations"][CONFIG]["patch_size"])
    patch = [trained[0] - 16] + trained[1:]  # the student's network takes it; UNETR's grid is fixed at training
    student_plans["configurations"][CONFIG]["patch_size"] = patch
    (scratch["preprocessed"] / f"{TEACHFORMER_PLANS}.json").write_text(json.dumps(student_plans))
    message = _refusal(_student())
    assert f"trained on the patch {trained}" in message and f"student's patch {patch}" in message
    assert "teachformer plan -d 990" in message and "-p TeachFormerPlans" in message


def test_a_fold_is_never_continued_with_another_teacher_set(scratch, monkeypatch):
    student = _student()
    student.on_train_start()
    student.save_checkpoint(os.path.join(student.output_folder, "checkpoint_latest.pth"))
    before = sorted(os.listdir(student.output_folder))

    monkeypatch.setenv("TEACHFORMER_TEACHERS", f"{TEACHER}:checkpoint_best.pth")
    message = _refusal(_student())
    assert f"{TEACHER}:checkpoint_final.pth" in message and f"{TEACHER}:checkpoint_best.pth" in message
    assert sorted(os.listdir(student.output_folder)) == before

    monkeypatch.delenv("TEACHFORMER_TEACHERS")
    _student().on_train_start()  # the original set continues


def test_unknown_teacher_is_refused_when_the_trainer_is_built(scratch, monkeypatch):
    monkeypatch.setenv("TEACHFORMER_TEACHERS", "UNETRTrainer_tiyn")
    with pytest.raises(TeachFormerError) as error:
        _student()
    message = str(error.value)
    assert "UNETRTrainer_tiyn" in message and "HDenseFormerTrainer, SwinUNETRTrainer, UNETRTrainer" in message
    assert "-tr UNETRTrainer_tiyn" not in message  # no command that cannot work
    assert not (scratch["results"] / DATASET_NAME / f"_Student__{TEACHFORMER_PLANS}__{CONFIG}").exists()


def test_invalid_options_are_refused_when_the_trainer_is_built(scratch):
    with pytest.raises(TeachFormerError) as error:
        _student(_StudentWithBadOptions)
    assert "pwd_combination = 'median'" in str(error.value) and "afs_taps = ('middle',)" in str(error.value)
    assert not (scratch["results"] / DATASET_NAME / f"_StudentWithBadOptions__{TEACHFORMER_PLANS}__{CONFIG}").exists()
