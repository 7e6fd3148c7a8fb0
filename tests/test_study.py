"""`teachformer train` / `predict`: the command list, bad input, and an interrupted study that resumes."""
import os
import queue
import shutil
import subprocess
import threading
import time

from conftest import CONFIG, DATASET_ID, TEACHFORMER_PLANS, console_script, kill_group, model_folder, run_cli

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
    from nnunet_teachformer.study import plan_study

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


def _study():
    return [str(a) for a in (TEACHFORMER, "train", "-d", DATASET_ID, "-f", 0, "--teachers", "unetr", "--preset",
                             "tiny", "--device", "cpu")]


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


def test_interrupted_study_resumes_and_never_retrains_finished_models(trained, tmp_path):
    results = tmp_path / "results"
    baseline = "HDenseFormerLightTrainer_tiny"  # finished before the study starts: it must be kept as it is
    shutil.copytree(trained["folders"][baseline], model_folder(results, baseline))
    baseline_checkpoint = model_folder(results, baseline) / "fold_0" / "checkpoint_final.pth"
    baseline_mtime = baseline_checkpoint.stat().st_mtime
    env = dict(os.environ, nnUNet_results=str(results), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(_study(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    seen = _lines_until(process, "Epoch 1", timeout=600)  # then kill the whole process group, in the teacher's
    kill_group(process)                                    # second epoch
    process.wait()
    teacher = model_folder(results, "UNETRTrainer_tiny") / "fold_0"
    assert any("Epoch 1" in line for line in seen), "".join(seen[-30:])
    assert not (teacher / "checkpoint_final.pth").exists() and (teacher / "checkpoint_best.pth").exists()

    resumed = run_cli(_study(), env=env).stdout
    assert "[1/2] teacher UNETRTrainer_tiny fold 0 (resuming)" in resumed, resumed
    assert f"[done]    {baseline} fold 0" in resumed, resumed
    assert baseline_checkpoint.stat().st_mtime == baseline_mtime
    for trainer in ("UNETRTrainer_tiny", baseline, "TeachFormerTrainer_UNETRTeacher_tiny"):
        assert (model_folder(results, trainer) / "fold_0" / "checkpoint_final.pth").is_file()
    teacher_log_count = len(list(teacher.glob("training_log_*.txt")))
    final_mtime = (teacher / "checkpoint_final.pth").stat().st_mtime

    again = run_cli(_study(), env=env).stdout
    assert "3 models (0 trained now)" in again
    assert len(list(teacher.glob("training_log_*.txt"))) == teacher_log_count
    assert (teacher / "checkpoint_final.pth").stat().st_mtime == final_mtime
