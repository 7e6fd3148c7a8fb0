"""From the nnU-Net models a user already has to a deployed student, through the real commands: a stock nnU-Net
trainer variant (``StockProbeTrainer``: nnUNetTrainerNoMirroring on a short schedule) on nnUNetPlans, whose 48^3
patch is no multiple of 32, trained on folds 0 and all; ``teachformer distill`` distils students from it with no
environment variable; ``teachformer predict -f all`` writes the held-out cases; the report shows the teacher and
both students; a stock model's checkpoint_best is refused. (A ResEnc preset's teacher: tests/test_adopt_resenc.py.)"""
import json
import shutil

import pytest

from conftest import CONFIG, DATASET_ID, DATASET_NAME, console_script, probe_env, run_cli

TEACHER = "StockProbeTrainer"
PLANS = "nnUNetPlans"
STUDENT, BASELINE = "TeachFormerTrainer_tiny", "HDenseFormerLightTrainer_tiny"


@pytest.fixture(scope="module")
def adopted(phantom, nnunet_dirs, tmp_path_factory):
    """A private results tree and preprocessed copy (the session's report tests see no extra models) in which the
    stock teacher is trained on folds 0 and all, then ``teachformer distill`` runs once."""
    root = tmp_path_factory.mktemp("adopt")
    preprocessed = root / "preprocessed"
    shutil.copytree(nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME, preprocessed / DATASET_NAME)
    env = probe_env(nnUNet_results=root / "results", nnUNet_preprocessed=preprocessed)
    for fold in (0, "all"):
        run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, fold, "-tr", TEACHER, "-device", "cpu"], env=env)
    distill = run_cli([console_script("teachformer"), "distill", "-d", DATASET_ID, "--from", TEACHER, "--baseline",
                       "--preset", "tiny", "-device", "cpu", "--no-timing"], env=env)
    return {"root": root, "env": env, "results": root / "results" / DATASET_NAME, "distill": distill.stdout}


def _model(adopted, trainer, plans=PLANS):
    return adopted["results"] / f"{trainer}__{plans}__{CONFIG}"


def test_distil_trains_every_fold_of_the_stock_model_and_reports_it(adopted):
    out = adopted["distill"]
    for trainer in (STUDENT, BASELINE):
        for fold in ("0", "all"):
            assert (_model(adopted, trainer) / f"fold_{fold}" / "checkpoint_final.pth").is_file()
    for trainer in (TEACHER, STUDENT, BASELINE):
        assert trainer in out.split("Report:")[0]  # rows of the report's table, teacher and both students
    assert "not cross-validated" in out  # fold all, listed apart
    assert (f"teachformer predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {DATASET_ID} -tr {STUDENT} -p {PLANS} -c {CONFIG} "
            f"-f all --device cpu") in out


def test_the_student_adapts_its_patch_and_records_a_derived_provenance(adopted):
    teacher_plans = json.loads((_model(adopted, TEACHER) / "plans.json").read_text())
    student_plans = json.loads((_model(adopted, STUDENT) / "plans.json").read_text())
    assert teacher_plans["configurations"][CONFIG]["patch_size"] == [48, 48, 48]
    assert student_plans["configurations"][CONFIG]["patch_size"] == [64, 64, 64]
    for fold in ("0", "all"):
        taught = json.loads((_model(adopted, STUDENT) / f"fold_{fold}" / "teachers.json").read_text())
        assert [(t["trainer"], t["provenance"], t["trained_patch_size"]) for t in taught] == \
            [(TEACHER, "derived from nnU-Net's split", [48, 48, 48])]
    teacher_files = sorted(p.name for p in (_model(adopted, TEACHER) / "fold_0").iterdir())
    assert "provenance.json" not in teacher_files  # nothing written into the user's teacher folder


def test_distil_again_trains_nothing(adopted):
    again = run_cli([console_script("teachformer"), "distill", "-d", DATASET_ID, "--from", TEACHER, "--baseline",
                     "--preset", "tiny", "-device", "cpu", "--dry-run"], env=adopted["env"])
    assert [line.startswith("# done: ") for line in again.stdout.splitlines()] == [True] * 4


def test_predict_with_the_fold_all_student(adopted, phantom, tmp_path):
    out = tmp_path / "predicted"
    run_cli([console_script("teachformer"), "predict", "-i", phantom / "imagesTs", "-o", out, "-d", DATASET_ID,
             "-tr", STUDENT, "-p", PLANS, "-f", "all", "-device", "cpu", "--disable_tta"], env=adopted["env"])
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in (phantom / "imagesTs").glob("*_0000.nii.gz"))
    assert cases and sorted(p.name for p in out.glob("*.nii.gz")) == [c + ".nii.gz" for c in cases]


def test_a_stock_models_best_checkpoint_is_refused(adopted):
    env = dict(adopted["env"], TEACHFORMER_TEACHERS=f"{TEACHER}:checkpoint_best.pth")
    trainer = "TeachFormerTrainer_UXNetLightStudent_tiny"
    refused = run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 0, "-p", PLANS, "-tr", trainer,
                       "-device", "cpu"], env=env, check=False)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert "selected by nnU-Net on its fold's validation cases" in message
    assert f"{TEACHER}:checkpoint_final.pth" in message
    assert not _model(adopted, trainer).exists()  # a refused start leaves nothing behind
