"""`teachformer train --submit slurm` and `teachformer status`, against a real SLURM on this machine.

The module fixture starts a one-node SLURM (munged, slurmctld, slurmd; CPUs only, 2 job slots) with
scripts/slurm-local and stops it by the process ids that script recorded. A tiny two-fold study goes
through it: fold 0's baseline is already trained (the session's, copied: it gets no job), fold 0 trains a
UNETR teacher and the distilled student, fold 1's baseline trains alongside; fold 1's teacher has a corrupt
checkpoint from an "interrupted" run, so its job resumes with --c, fails, and its student must never run;
then the report runs.

Rule: where SLURM is not installed or cannot start, these tests FAIL with the reason when CI is set
(.ci/run installs slurm-wlm and munge with `scripts/slurm-local install`), and are skipped with the reason
on a developer machine without it (install it the same way, as root, to run them).
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import DATASET_ID, DATASET_NAME, console_script, model_folder, run_cli
from nnunet_teachformer.cli import main as teachformer_main

TEACHFORMER = console_script("teachformer")
SLURM_LOCAL = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local"
TEACHER, BASELINE = "UNETRTrainer_tiny", "HDenseFormerLightTrainer_tiny"
STUDENT = "TeachFormerTrainer_UNETRTeacher_tiny"
STUDY = ["train", "-d", DATASET_ID, "-f", 0, 1, "--teachers", "unetr", "--preset", "tiny", "--device", "cpu",
         "--submit", "slurm", "--gpus", "0"]


def _unavailable(reason):
    if os.environ.get("CI"):
        pytest.fail(f"the SLURM tests cannot run here: {reason}", pytrace=False)
    pytest.skip(f"no local SLURM ({reason}); CI fails instead of skipping")


def _free_port_pair():
    """A port for slurmctld whose successor (slurmd's) is free too."""
    for port in range(6817, 7017, 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("", port))
                b.bind(("", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair in 6817-7017 for slurmctld and slurmd")


@pytest.fixture(scope="module")
def slurm_env():
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol") if not shutil.which(t)]
    if missing:
        _unavailable(f"{', '.join(missing)} not found; `scripts/slurm-local install` (as .ci/run does) installs "
                     f"slurm-wlm and munge with apt-get as root")
    if os.geteuid() != 0:
        _unavailable("starting munged (as user munge) and slurmd (which runs jobs as their users) needs root")
    state = Path(tempfile.mkdtemp(prefix="teachformer-slurm-"))  # not under pytest's 0700 folders: munge must enter
    env = dict(os.environ, SLURM_LOCAL_PORT=str(_free_port_pair()))
    started = time.time()
    start = subprocess.run([str(SLURM_LOCAL), "start", str(state)], env=env, capture_output=True, text=True,
                           timeout=120)
    try:
        if start.returncode != 0:
            _unavailable(f"scripts/slurm-local start failed: {start.stderr.strip()}")
        print(f"local SLURM up in {time.time() - started:.1f} s")
        yield dict(os.environ, SLURM_CONF=str(state / "slurm.conf"))
    finally:
        subprocess.run([str(SLURM_LOCAL), "stop", str(state)], timeout=180)
        shutil.rmtree(state, ignore_errors=True)


def _jobs(env):
    """{job id: scontrol's fields} of every job the local controller knows (MinJobAge keeps ended ones)."""
    out = run_cli(["scontrol", "show", "job", "-o"], env=env).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


@pytest.fixture(scope="module")
def study(phantom, trained, slurm_env, tmp_path_factory):
    """The submitted study once SLURM's queue is empty: {env, results, ids (job name -> id), jobs, output}."""
    results = tmp_path_factory.mktemp("slurm_results")
    env = dict(slurm_env, nnUNet_results=str(results))
    shutil.copytree(trained["folders"][BASELINE], model_folder(results, BASELINE))  # fold 0, finished
    broken = model_folder(results, TEACHER) / "fold_1"
    broken.mkdir(parents=True)
    (broken / "checkpoint_latest.pth").write_bytes(b"not a checkpoint: the disk filled up")

    started = time.time()
    output = run_cli([TEACHFORMER, *STUDY], env=env).stdout
    deadline = time.time() + 1800
    while run_cli(["squeue", "-h", "-o", "%i"], env=env).stdout.strip():
        if time.time() > deadline:
            status = run_cli([TEACHFORMER, "status", "-d", DATASET_ID], env=env, check=False).stdout
            pytest.fail(f"the study's jobs did not end within 30 min:\n{status}")
        time.sleep(5)
    print(f"study submitted and ended in {time.time() - started:.0f} s")
    folder = results / DATASET_NAME / "slurm"
    records = [json.loads(line) for line in (folder / "jobs.jsonl").read_text().splitlines()]
    ids = {r["name"]: r["id"] for r in records}
    return {"env": env, "results": results, "folder": folder, "ids": ids, "jobs": _jobs(env), "output": output}


def _name(trainer, fold):
    return f"{trainer}__TeachFormerPlans__3d_fullres_fold{fold}"


def _scontrol_time(value):
    return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))


def test_jobs_run_in_dependency_order(study):
    ids, jobs = study["ids"], study["jobs"]
    assert len(ids) == 6 and _name(BASELINE, 0) not in ids, ids  # 2 folds x 3 models + report, less the finished
    job = {name: jobs[job_id] for name, job_id in ids.items()}
    for name in (_name(TEACHER, 0), _name(STUDENT, 0), _name(BASELINE, 1), "report"):
        assert job[name]["JobState"] == "COMPLETED", (name, job[name])
    for trainer in (TEACHER, BASELINE, STUDENT):
        assert (model_folder(study["results"], trainer) / "fold_0" / "checkpoint_final.pth").is_file()
    teacher, student = job[_name(TEACHER, 0)], job[_name(STUDENT, 0)]
    assert student["Dependency"] == "(null)"  # satisfied; it was afterok on the teacher
    assert _scontrol_time(student["StartTime"]) >= _scontrol_time(teacher["EndTime"])
    report = _scontrol_time(job["report"]["StartTime"])
    assert all(report >= _scontrol_time(j["EndTime"]) for name, j in job.items() if name != "report")
    assert (study["results"] / DATASET_NAME / "teachformer_report" / "report.md").is_file()


def test_failed_teacher_keeps_its_student_from_running(study):
    ids, jobs, folder = study["ids"], study["jobs"], study["folder"]
    teacher, student = _name(TEACHER, 1), _name(STUDENT, 1)
    assert jobs[ids[teacher]]["JobState"] == "FAILED"
    log = (folder / "logs" / f"{teacher}_{ids[teacher]}.out").read_text()
    assert "resuming from the checkpoints" in log  # an interrupted model resumes with --c
    assert (jobs[ids[student]]["JobState"], jobs[ids[student]]["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not (folder / "logs" / f"{student}_{ids[student]}.out").exists()
    assert not list(model_folder(study["results"], STUDENT).glob("fold_1/training_log_*"))

    status = run_cli([TEACHFORMER, "status", "-d", DATASET_ID], env=study["env"]).stdout
    rows = {tuple(line.split()[:3]): line for line in status.splitlines()[2:]}
    for trainer in (TEACHER, STUDENT):
        assert rows[("0", _role(trainer), trainer)].split()[3] == "done", status
    assert ("0", "baseline", BASELINE) not in rows, status  # finished before the study: never a job
    failed, never_ran = rows[("1", "teacher", TEACHER)], rows[("1", "distilled", STUDENT)]
    assert failed.split()[3:5] == ["failed", ids[teacher]] and "exit code 1" in failed, status
    assert never_ran.split()[3:6] == ["never", "ran", ids[student]], status
    assert f"because teacher {TEACHER} fold 1 failed" in never_ran, status


def _role(trainer):
    return {TEACHER: "teacher", BASELINE: "baseline", STUDENT: "distilled"}[trainer]


def test_resubmission_writes_only_the_unfinished_models(study):
    out = run_cli([TEACHFORMER, *STUDY, "--write-only"], env=study["env"]).stdout
    assert "Wrote 3 job scripts" in out, out  # fold 1's teacher and student, and the report
    submit = (study["folder"] / "submit.sh").read_text()
    assert f"submit {_name(TEACHER, 1)})" in submit
    assert f"submit {_name(STUDENT, 1)} --dependency=afterok:$job1 --kill-on-invalid-dep=yes)" in submit
    assert "fold0" not in submit and _name(BASELINE, 1) not in submit


def test_job_scripts_ask_for_gpus_and_pass_sbatch_options(phantom, tmp_path, capsys):
    env = dict(os.environ, nnUNet_results=str(tmp_path))
    run_cli([TEACHFORMER, "train", "-d", DATASET_ID, "-f", 0, "--teachers", "unetr", "--preset", "tiny", "--submit",
             "slurm", "--write-only", "--gpus", 2, "--sbatch-args", "--time=48:00:00"], env=env)
    script = (tmp_path / DATASET_NAME / "slurm" / f"{_name(TEACHER, 0)}.sh").read_text()
    assert "#SBATCH --gres=gpu:2\n#SBATCH --time=48:00:00\n" in script
    assert f"-tr {TEACHER} -device cuda --npz -num_gpus 2 " in script
    assert f"export nnUNet_results={tmp_path}\n" in script

    def error(*args):
        """The command's own entry point in this process (a new interpreter per refusal costs ~10 s): each of
        these is refused before anything is written."""
        code = teachformer_main(["train", "-d", str(DATASET_ID), "-f", "0", "--preset", "tiny", *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("teachformer: error: "), err
        return err

    assert "--device cpu" in error("--submit", "slurm", "--gpus", "0", "--write-only")
    assert "are for the job scripts of --submit slurm" in error("--gpus", "2")
    assert "needs --device cuda" in error("--submit", "slurm", "--write-only", "--gpus", "2", "--device", "cpu")
    assert "not options" in error("--submit", "slurm", "--write-only", "--sbatch-args", "partition=gpu")
    no_slurm = dict(env, PATH=str(Path(TEACHFORMER).parent))
    result = run_cli([TEACHFORMER, "train", "-d", DATASET_ID, "-f", 0, "--preset", "tiny", "--submit", "slurm"],
                     env=no_slurm, check=False)
    assert result.returncode == 2 and "sbatch is not on PATH" in result.stderr, result.stderr


def _sbatch_arguments(line):
    """The arguments sbatch reads from one ``#SBATCH`` line, split as ``_get_argument`` in sbatch's opt.c does (no
    shell): quotes group, a backslash escapes the next character, even inside quotes; an unquoted # ends it."""
    args, arg, quote, escaped = [], None, None, False
    for c in line[len("#SBATCH"):]:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
            continue
        elif quote:
            if c == quote:
                quote = None
                continue
        elif c in "\"'":
            quote, arg = c, arg or ""
            continue
        elif c == "#":
            break
        elif c.isspace():
            args += [arg] if arg is not None else []
            arg = None
            continue
        arg = (arg or "") + c
    return args + ([arg] if arg is not None else [])


def test_job_scripts_keep_paths_with_spaces_and_quotes_whole(phantom, tmp_path, monkeypatch):
    results = tmp_path / "nnU-Net results \"v2\" 100%"
    monkeypatch.setenv("nnUNet_results", str(results))
    assert teachformer_main(["train", "-d", str(DATASET_ID), "-f", "0", "--teachers", "unetr", "--preset", "tiny",
                             "--submit", "slurm", "--write-only",
                             "--sbatch-args", "--comment='a study' --gres=gpu:a100:1"]) == 0
    name = _name(TEACHER, 0)
    script = (results / DATASET_NAME / "slurm" / f"{name}.sh").read_text()
    sbatch = [arg for line in script.splitlines() if line.startswith("#SBATCH") for arg in _sbatch_arguments(line)]
    log = str(results / DATASET_NAME / "slurm" / "logs" / name).replace("%", "%%")
    assert f"--output={log}_%j.out" in sbatch, sbatch
    assert "--comment=a study" in sbatch
    assert [a for a in sbatch if a.startswith("--gres")] == ["--gres=gpu:a100:1"]  # the user's GPU type, not ours
    assert subprocess.run(["bash", "-n", results / DATASET_NAME / "slurm" / f"{name}.sh"]).returncode == 0


def test_status_without_a_submission_names_each_role_from_the_trainer_class(tmp_path):
    """A results tree no SLURM submission made (models trained by hand): each row's role is the trainer class's,
    as the report classifies it (``evaluation.results.role_of``). Needs no SLURM."""
    name = "Dataset991_StatusTree"
    env = os.environ.copy()
    for folder in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / folder).mkdir()
        env[folder] = str(tmp_path / folder)
    (tmp_path / "nnUNet_preprocessed" / name).mkdir()
    roles = {"UNETRTrainer_tiny": "teacher", "HDenseFormerLightTrainer_tiny": "baseline",
             "TeachFormerTrainer_UNETRTeacher_tiny": "distilled", "UNetTrainer_tiny": "baseline",
             "NoSuchTrainer": "model"}
    for trainer in roles:
        fold = tmp_path / "nnUNet_results" / name / f"{trainer}__TeachFormerPlans__3d_fullres" / "fold_0"
        fold.mkdir(parents=True)
        (fold / "checkpoint_final.pth").touch()
    out = run_cli([TEACHFORMER, "status", "-d", 991], env=env).stdout
    rows = {line.split()[2]: line.split() for line in out.splitlines()[2:]}
    assert {trainer: rows[trainer][1] for trainer in roles} == roles, out
    assert all(row[0] == "0" and row[3] == "done" for row in rows.values()), out
