"""A user's nnU-Net model on a ResEnc preset's plans teaches a student: ``nnUNetPlannerResEncM`` plans the phantom,
the stock teacher variant (``StockProbeTrainer``) trains fold 0 on them through ``nnUNetv2_train``, and
``teachformer distill -p nnUNetResEncUNetMPlans`` distils a student from it. Its own module (so its own pytest-xdist
group): it needs none of tests/test_adopt.py's trained folds, and runs beside them."""
import json
import shutil

from conftest import CONFIG, DATASET_ID, DATASET_NAME, console_script, probe_env, run_cli

TEACHER = "StockProbeTrainer"
STUDENT = "TeachFormerTrainer_tiny"
RESENC_PLANS = "nnUNetResEncUNetMPlans"


def test_a_resenc_preset_teaches_too(phantom, nnunet_dirs, tmp_path):
    preprocessed = tmp_path / "preprocessed"
    shutil.copytree(nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME, preprocessed / DATASET_NAME)
    env = probe_env(nnUNet_results=tmp_path / "results", nnUNet_preprocessed=preprocessed)
    run_cli([console_script("nnUNetv2_plan_experiment"), "-d", DATASET_ID, "-pl", "nnUNetPlannerResEncM"],
            env=dict(env, nnUNet_n_proc_DA="1"))
    # the planner fills its 8 GB target with a batch of 10 of the phantom's 48^3 patches; a user may edit plans.json,
    # and batch 2 lets this CPU train the teacher in a minute instead of ten (the preset is still ResEnc M)
    plans_file = preprocessed / DATASET_NAME / f"{RESENC_PLANS}.json"
    plans = json.loads(plans_file.read_text())
    assert plans["configurations"][CONFIG]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    plans["configurations"][CONFIG]["batch_size"] = 2
    plans_file.write_text(json.dumps(plans, indent=1))
    run_cli([console_script("nnUNetv2_preprocess"), "-d", DATASET_ID, "-plans_name", RESENC_PLANS, "-c", CONFIG,
             "-np", 1], env=dict(env, nnUNet_n_proc_DA="1"))
    run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 0, "-p", RESENC_PLANS, "-tr", TEACHER,
             "-device", "cpu"], env=env)
    run_cli([console_script("teachformer"), "distill", "-d", DATASET_ID, "--from", TEACHER, "-p", RESENC_PLANS,
             "-f", 0, "--preset", "tiny", "-device", "cpu", "--no-timing"], env=env)
    student = tmp_path / "results" / DATASET_NAME / f"{STUDENT}__{RESENC_PLANS}__{CONFIG}" / "fold_0"
    taught = json.loads((student / "teachers.json").read_text())
    assert [(t["trainer"], t["provenance"]) for t in taught] == [(TEACHER, "derived from nnU-Net's split")]
    assert (student / "checkpoint_final.pth").is_file()
