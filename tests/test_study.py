"""`teachformer train` / `predict`: the command list and bad input (an interrupted study that resumes: test_2d)."""
from conftest import CONFIG, DATASET_ID, TEACHFORMER_PLANS, console_script, run_cli

TEACHFORMER = console_script("teachformer")


def test_dry_run_prints_every_nnunet_command(phantom):
    out = run_cli([TEACHFORMER, "train", "-d", DATASET_ID, "-f", 0, 1, "--preset", "tiny", "--device", "cpu",
                   "--dry-run"]).stdout
    lines = [line for line in out.splitlines() if "nnUNetv2_train" in line]
    assert len(lines) == 10  # 3 teachers + baseline + distilled, two folds
    for fold in (0, 1):
        for trainer in ("HDenseFormerTrainer_tiny", "SwinUNETRTrainer_tiny", "UNETRTrainer_tiny",
                        "HDenseFormerLightTrainer_tiny", "TeachFormerTrainer_tiny"):
            expected = (f"nnUNetv2_train {DATASET_ID} {CONFIG} {fold} -p {TEACHFORMER_PLANS} -tr {trainer} "
                        f"-device cpu --npz")
            assert any(line.endswith(expected) for line in lines), (expected, out)


def test_ad_hoc_teacher_sets_go_through_the_environment(phantom):
    out = run_cli([TEACHFORMER, "train", "-d", DATASET_ID, "-f", 0, "--teachers", "swinunetr", "unetr",
                   "--preset", "tiny", "--dry-run"]).stdout
    assert "TEACHFORMER_TEACHERS=SwinUNETRTrainer_tiny,UNETRTrainer_tiny nnUNetv2_train" in out
    single = run_cli([TEACHFORMER, "train", "-d", DATASET_ID, "-f", 0, "--teachers", "unetr", "--preset", "tiny",
                      "--dry-run"]).stdout
    assert "-tr TeachFormerTrainer_UNETRTeacher_tiny" in single


def test_nnunet_unets_join_the_study_as_teachers_and_baseline(phantom):
    from nnunet_teachformer.study.run import plan_study

    def trainers(teachers, **kwargs):
        return [(r.role, r.trainer, r.env.get("TEACHFORMER_TEACHERS")) for r in
                plan_study(DATASET_ID, [0], teachers, "hdenseformer_light", device="cpu", preset="tiny", **kwargs)]

    assert trainers(["unet", "swinunetr"])[-1] == ("distilled", "TeachFormerTrainer_tiny",
                                                   "UNetTrainer_tiny,SwinUNETRTrainer_tiny")
    four = trainers(["hdenseformer", "swinunetr", "unetr", "unet"])
    assert ("teacher", "UNetTrainer_tiny", None) in four and four[-1][1:] == ("TeachFormerTrainer_fourTeachers_tiny", None)
    assert trainers(["unet"])[-1][1] == "TeachFormerTrainer_UNetTeacher_tiny"
    assert ("baseline", "UNetTrainer_tiny", None) in trainers(["unetr"], nnunet_baseline=True)
    assert ("baseline", "UNetTrainer_tiny", None) not in trainers(["unetr"])


def test_unet_students_train_beside_the_others(phantom):
    out = run_cli([TEACHFORMER, "train", "-d", DATASET_ID, "-f", 0, "--student", "unet_r4", "--preset", "tiny",
                   "--device", "cpu", "--dry-run"]).stdout
    trainers = [line.split(" -tr ")[1].split()[0] for line in out.splitlines() if "nnUNetv2_train" in line]
    assert trainers == ["HDenseFormerTrainer_tiny", "SwinUNETRTrainer_tiny", "UNETRTrainer_tiny",
                        "UNetLightR4Trainer_tiny", "TeachFormerTrainer_UNetLightR4Student_tiny"], out

    from nnunet_teachformer.study.run import plan_study
    runs = plan_study(DATASET_ID, [0], ["unet"], "unet_r8", device="cpu", preset="5epochs")
    assert [(r.role, r.trainer, r.env) for r in runs] == [
        ("teacher", "UNetTrainer_5epochs", {}), ("baseline", "UNetLightR8Trainer_5epochs", {}),
        ("distilled", "TeachFormerTrainer_UNetLightR8Student_5epochs",
         {"TEACHFORMER_TEACHERS": "UNetTrainer_5epochs"})]


def _error(args):
    result = run_cli([TEACHFORMER, *args], check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_bad_input_gets_one_clear_paragraph(phantom, tmp_path):
    assert "Unknown dataset id 999" in _error(["train", "-d", 999, "--dry-run"])
    assert "fold(s) [7] do not exist" in _error(["train", "-d", DATASET_ID, "-f", 7, "--dry-run"])
    message = _error(["train", "-d", DATASET_ID, "-p", "NoSuchPlans", "--dry-run"])
    assert "has not been planned with NoSuchPlans" in message
    message = _error(["predict", "-d", DATASET_ID, "-f", 3, "-i", tmp_path, "-o", tmp_path / "out",
                      "-tr", "NotTrainedTrainer"])
    assert "missing checkpoint" in message and "fold_3" in message
