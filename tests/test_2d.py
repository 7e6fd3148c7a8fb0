"""The paper's 2D arm on the phantom through the real CLI: TeachFormerPlans' 2d configuration, a tiny UNETR
teacher, the baseline and the distilled student trained by `teachformer train -c 2d` (interrupted once: it
resumes and never retrains a finished model), prediction without the teacher, the report, and the refusal of
a teacher trained for another configuration."""
import json
import os
import queue
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import DATASET_ID, DATASET_NAME, TEACHFORMER_PLANS, console_script, fabricate_model, kill_group, run_cli
from nnunet_teachformer.networks.registry import NETWORKS

TEACHFORMER = console_script("teachformer")
TEACHER, BASELINE, STUDENT = "UNETRTrainer_tiny", "HDenseFormerLightTrainer_tiny", "TeachFormerTrainer_UNETRTeacher_tiny"


def _folder(results, trainer, configuration="2d"):
    return results / DATASET_NAME / f"{trainer}__{TEACHFORMER_PLANS}__{configuration}"


def _lines_until(process, marker, timeout):
    """The lines ``process`` prints until one contains ``marker`` (or it ends, or ``timeout`` s pass); a reader
    thread keeps a silent process from blocking the test past the timeout."""
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline and (process.poll() is None or not lines.empty()):
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if marker in seen[-1]:
            break
    return seen


@pytest.fixture(scope="module")
def study_2d(phantom, nnunet_dirs, tmp_path_factory):
    """`teachformer train -c 2d` killed in the teacher's second epoch, run again (it resumes), and a third time
    (nothing left to train)."""
    plan = run_cli([TEACHFORMER, "plan", "-d", DATASET_ID, "-c", "2d", "-np", 1]).stdout
    results = tmp_path_factory.mktemp("results_2d")
    env = dict(os.environ, nnUNet_results=str(results), PYTHONUNBUFFERED="1")
    study = [str(a) for a in (TEACHFORMER, "train", "-d", DATASET_ID, "-c", "2d", "-f", 0, "--teachers", "unetr",
                              "--preset", "tiny", "--device", "cpu")]
    process = subprocess.Popen(study, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    killed = _lines_until(process, "Epoch 1", timeout=600)
    kill_group(process)  # the whole process group: the study and its nnUNetv2_train
    process.wait()
    teacher = _folder(results, TEACHER) / "fold_0"
    interrupted = {"output": killed, "final": (teacher / "checkpoint_final.pth").exists(),
                   "best": (teacher / "checkpoint_best.pth").exists()}
    resumed = run_cli(study, env=env, timeout=1500).stdout
    finished = {t: (_folder(results, t) / "fold_0" / "checkpoint_final.pth").stat().st_mtime
                for t in (TEACHER, BASELINE, STUDENT)}
    logs = len(list(teacher.glob("training_log_*.txt")))
    again = run_cli(study, env=env).stdout
    plans = json.loads((nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME / f"{TEACHFORMER_PLANS}.json").read_text())
    return {"plan": plan, "interrupted": interrupted, "resumed": resumed, "again": again, "finished": finished,
            "teacher_logs": logs, "results": results, "env": env, "plans": plans}


def test_an_interrupted_study_resumes_and_never_retrains_finished_models(study_2d):
    interrupted = study_2d["interrupted"]
    assert any("Epoch 1" in line for line in interrupted["output"]), "".join(interrupted["output"][-30:])
    assert not interrupted["final"] and interrupted["best"]
    assert "[1/3] teacher UNETRTrainer_tiny fold 0 (resuming)" in study_2d["resumed"], study_2d["resumed"]
    assert "3 models (0 trained now)" in study_2d["again"], study_2d["again"]
    results = study_2d["results"]
    for trainer, mtime in study_2d["finished"].items():
        assert (_folder(results, trainer) / "fold_0" / "checkpoint_final.pth").stat().st_mtime == mtime, trainer
    assert len(list((_folder(results, TEACHER) / "fold_0").glob("training_log_*.txt"))) == study_2d["teacher_logs"]


def test_the_2d_patch_suits_every_network(study_2d):
    patch = study_2d["plans"]["configurations"]["2d"]["patch_size"]
    assert len(patch) == 2 and all(p % 32 == 0 for p in patch), patch
    assert f"patch size     {patch[0]} x {patch[1]}" in study_2d["plan"], study_2d["plan"]
    for key, spec in NETWORKS.items():
        assert spec.patch_problem(patch) is None, key
    notes = study_2d["plans"]["teachformer"]["configurations"]["2d"]
    assert set(notes["teachers"]) == {"H-DenseFormer", "SwinUNETR", "UNETR"}  # memory measured in 2D


def test_teachformer_train_2d_trains_teacher_baseline_and_distilled_student(study_2d):
    results = study_2d["results"]
    for trainer in (TEACHER, BASELINE, STUDENT):
        fold = _folder(results, trainer) / "fold_0"
        assert (fold / "checkpoint_final.pth").is_file(), trainer
        assert (fold / "validation" / "summary.json").is_file() and list((fold / "validation").glob("*.npz"))
        checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert checkpoint["init_args"]["configuration"] == "2d"
        convs = [w for k, w in checkpoint["network_weights"].items() if k.endswith("weight") and w.ndim >= 4]
        assert convs and all(w.ndim == 4 for w in convs), trainer  # 2D convolutions only
    taught = json.loads((_folder(results, STUDENT) / "fold_0" / "teachers.json").read_text())
    assert [(t["trainer"], t["provenance"]) for t in taught] == [(TEACHER, "recorded")]
    assert "__2d" in taught[0]["checkpoint"]
    log = next((_folder(results, STUDENT) / "fold_0").glob("training_log_*.txt")).read_text()
    assert "L_AFS" in log and "L_PWD" in log


def test_the_2d_student_predicts_without_its_teacher(study_2d, phantom, tmp_path):
    alone = tmp_path / "student_only"
    shutil.copytree(_folder(study_2d["results"], STUDENT), _folder(alone, STUDENT))
    out = tmp_path / "predictions"
    run_cli([TEACHFORMER, "predict", "-i", phantom / "imagesTs", "-o", out, "-d", DATASET_ID, "-c", "2d", "-f", 0,
             "-tr", STUDENT, "--device", "cpu", "--disable-tta"], env=dict(os.environ, nnUNet_results=str(alone)))
    labels = sorted((phantom / "labelsTs").glob("*.nii.gz"))
    assert labels
    for label in labels:
        expected = sitk.ReadImage(str(label))
        predicted = sitk.ReadImage(str(out / label.name))
        assert predicted.GetSize() == expected.GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(predicted))) <= {0, 1, 2}


def test_the_report_compares_the_2d_models(study_2d, tmp_path):
    out = tmp_path / "report"
    run_cli([TEACHFORMER, "report", "-d", DATASET_ID, "-f", 0, "-o", out, "--no-timing", "--reference", STUDENT],
            env=study_2d["env"])
    with open(out / "models.csv") as f:
        rows = {line.split(",")[0] for line in f.read().splitlines()[1:]}
    assert rows == {TEACHER, BASELINE, STUDENT}
    tests = (out / "paired_tests.csv").read_text()
    assert TEACHER in tests and BASELINE in tests


def test_a_3d_teacher_cannot_teach_a_2d_student(study_2d, nnunet_dirs, tmp_path):
    results = tmp_path / "results"
    fabricate_model(results, TEACHER, nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME, "3d_fullres")
    result = run_cli([console_script("nnUNetv2_train"), DATASET_ID, "2d", 0, "-p", TEACHFORMER_PLANS, "-tr", STUDENT,
                      "-device", "cpu"], env=dict(os.environ, nnUNet_results=str(results)), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "it is trained for 3d_fullres only" in output, output[-2000:]
    assert f"nnUNetv2_train {DATASET_ID} 2d 0 -p {TEACHFORMER_PLANS} -tr {TEACHER}" in output
    assert not _folder(results, STUDENT).exists()  # refused before nnU-Net made its folder
