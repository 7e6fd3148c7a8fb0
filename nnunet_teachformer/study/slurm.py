"""A Teach-Former study as a SLURM job graph: one batch script per model, submitted with its dependencies.

``teachformer train ... --submit slurm`` writes, into ``$nnUNet_results/<Dataset>/slurm/``:

    <model>_fold<f>.sh  one ``nnUNetv2_train`` job per unfinished model (the ``ModelRun`` of ``study.run.plan_study``)
    report.sh           ``teachformer report`` once every model job has ended
    submit.sh           the ``sbatch`` calls: teachers and baselines at once, each distilled student
                        ``afterok`` on exactly its fold's teacher jobs (and cancelled if one fails), the report
                        ``afterany`` on all; every submitted job id is appended to ``jobs.jsonl``
    study.json          which job is which model, fold and role, and what it waits for (read by ``status``)
    logs/, exit/        each job's output, and the exit code each job script records when it ends

and runs ``submit.sh`` unless ``--write-only``; the user may edit the scripts and run ``bash submit.sh``.
A job script decides at run time what the local run decides before starting a model: a finished model
(``checkpoint_final.pth``) is not trained again, a started one resumes with ``--c``. So the folder can be
submitted again after a failure or a time limit, and only what is missing runs.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.nnunet_paths import check_writable
from nnunet_teachformer.study.run import ModelRun

SLURM_FOLDER = "slurm"
MANIFEST = "study.json"
JOB_IDS = "jobs.jsonl"
REPORT_JOB = "report"
NNUNET_PATHS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def slurm_folder(dataset_name: str) -> Path:
    return Path(os.environ.get("nnUNet_results", ""), dataset_name, SLURM_FOLDER)


def job_name(run: ModelRun) -> str:
    """``<trainer>__<plans>__<configuration>_fold<f>``: nnU-Net's model folder name plus the fold."""
    return f"{run.folder.parent.name}_fold{run.fold}"


def _executable(name: str) -> str:
    """The console script of this interpreter's environment (jobs must not depend on the batch shell's PATH)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


# sbatch options that the job scripts or submit.sh set themselves -> why --sbatch-args must not set them too
SET_BY_THE_STUDY = {
    "--dependency": "submit.sh gives each job its dependencies (students afterok on their fold's teachers, the "
                    "report afterany on every job); another dependency would break that order",
    "--kill-on-invalid-dep": "submit.sh sets it on each student (cancelled when a teacher fails)",
    "--output": "each job script writes its log to logs/<job>_<id>.out, where teachformer status finds it",
    "--error": "each job script keeps its errors in its log, logs/<job>_<id>.out, where teachformer status finds them",
    "--job-name": "each job script names its job after its model and fold",
    "--array": "each job trains one model: an array would train the same model several times at once",
    "--gpus": "GPUs are asked for with teachformer's --gpus N (it writes --gres=gpu:N and runs nnU-Net's "
              "-num_gpus N)",
    "--gpus-per-node": "GPUs are asked for with teachformer's --gpus N",
    "--gpus-per-task": "GPUs are asked for with teachformer's --gpus N",
}
SHORT_OPTIONS = {"-d": "--dependency", "-o": "--output", "-e": "--error", "-J": "--job-name", "-a": "--array",
                 "-G": "--gpus"}


def _option_name(arg: str) -> str:
    """The long name of an sbatch option as given: --name=value, --name, -xVALUE or -x."""
    if arg.startswith("--"):
        return arg.split("=", 1)[0]
    return SHORT_OPTIONS.get(arg[:2], arg[:2])


def _gres_gpus(arg: str) -> Optional[int]:
    """GPUs per node that a --gres=... option asks for (gpu, gpu:N, gpu:TYPE:N); None if it asks for none."""
    if not arg.startswith("--gres="):
        return None
    for item in arg[len("--gres="):].split(","):
        parts = item.split(":")
        if parts[0] == "gpu":
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return None


def check_sbatch_args(args: Sequence[str], gpus: int) -> None:
    """TeachFormerError naming each option of ``--sbatch-args`` that contradicts the job graph or ``--gpus``."""
    clashes = [f"{arg}: {SET_BY_THE_STUDY[_option_name(arg)]}; leave it out" for arg in args
               if _option_name(arg) in SET_BY_THE_STUDY]
    clashes += [f"{arg} asks for {n} GPU(s) per job, --gpus for {gpus}: give the number with --gpus {n} --device "
                f"{'cuda' if n else 'cpu'} (and a GPU type as --gres=gpu:TYPE:{n})"
                for arg in args if (n := _gres_gpus(arg)) is not None and n != gpus]
    if clashes:
        raise TeachFormerError(f"--sbatch-args contradicts the job scripts: {'; '.join(clashes)}.")


def sbatch_quote(value: str) -> str:
    """``value`` as one argument of an ``#SBATCH`` line. sbatch splits these lines itself, not with a shell: double
    or single quotes group, a backslash escapes the next character, even inside quotes (``_get_argument`` in
    sbatch's opt.c), and an unquoted # starts a comment."""
    if not any(c.isspace() or c in "\"'\\#" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _header(name: str, slurm_name: str, folder: Path, gpus: int, sbatch_args: Sequence[str], what: str) -> List[str]:
    log = str(folder / "logs" / name).replace("%", "%%")  # sbatch expands %j etc. in file names; %% is a %
    lines = ["#!/bin/bash",
             f"# {what}",
             "# Written by `teachformer train --submit slurm`. Submit the study with submit.sh (it sets the",
             "# dependencies between the jobs); `teachformer status -d <dataset>` shows where it stands.",
             f"#SBATCH --job-name={slurm_name}",
             f"#SBATCH --output={sbatch_quote(log + '_%j.out')}",
             "#SBATCH --ntasks=1"]
    if gpus and not any(_gres_gpus(arg) is not None for arg in sbatch_args):  # the user's --gres names a GPU type
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    lines += [f"#SBATCH {sbatch_quote(arg)}" for arg in sbatch_args]
    lines += [f"export {k}={shlex.quote(os.environ[k])}" for k in NNUNET_PATHS if k in os.environ]
    return lines


def _record_exit(folder: Path) -> List[str]:
    """Job scripts record their exit code: without an accounting database SLURM forgets finished jobs."""
    return [f"mkdir -p {shlex.quote(str(folder / 'exit'))}",
            f"echo $code > {shlex.quote(str(folder / 'exit'))}/${{SLURM_JOB_ID:-local}}",
            "exit $code", ""]


def model_script(run: ModelRun, name: str, slurm_name: str, folder: Path, gpus: int,
                 sbatch_args: Sequence[str]) -> str:
    command = [_executable(run.command[0])] + run.command[1:] + (["-num_gpus", str(gpus)] if gpus > 1 else [])
    model = shlex.quote(str(run.folder))
    lines = _header(name, slurm_name, folder, gpus, sbatch_args, f"Teach-Former study: {run.role} {run.trainer}, "
                                                                 f"fold {run.fold}.")
    lines += [f"export {k}={shlex.quote(v)}" for k, v in run.env.items()]
    lines += [f"model={model}",
              "# decided when the job starts, like the local run: skip a finished model, resume a started one",
              'if [ -f "$model/checkpoint_final.pth" ]; then',
              '    echo "already trained: $model/checkpoint_final.pth"',
              "    code=0",
              "else",
              "    resume=()",
              '    if compgen -G "$model/checkpoint_*.pth" > /dev/null; then',
              '        resume=(--c)',
              '        echo "resuming from the checkpoints in $model"',
              "    fi",
              f'    {" ".join(shlex.quote(c) for c in command)} "${{resume[@]}}"',
              "    code=$?",
              "fi"]
    return "\n".join(lines + _record_exit(folder))


def report_script(dataset_id, folds: Sequence[int], device: str, folder: Path, slurm_name: str, gpus: int,
                  sbatch_args: Sequence[str]) -> str:
    command = [_executable("teachformer"), "report", "-d", str(dataset_id), "-f", *map(str, folds)]
    command += ["--device", "cuda" if device == "cuda" else "cpu"]
    lines = _header(REPORT_JOB, slurm_name, folder, min(gpus, 1), sbatch_args,
                    "Teach-Former study: the report, once every model job has ended.")
    lines += [" ".join(shlex.quote(c) for c in command), "code=$?"]
    return "\n".join(lines + _record_exit(folder))


def _submit_script(jobs: List[dict]) -> str:
    lines = ["#!/usr/bin/env bash",
             "# Submits the study's jobs with their dependencies (written by `teachformer train --submit slurm`).",
             "# Each distilled student waits for its fold's teachers (afterok) and is cancelled if one fails;",
             "# the report waits for every job (afterany). Submitted ids are appended to jobs.jsonl.",
             "set -euo pipefail",
             'cd "$(dirname "$0")"',
             "submit() {  # job name, extra sbatch options; prints the job id",
             "    local name=$1 id",
             "    shift",
             '    id=$(sbatch --parsable "$@" "$name.sh")',
             "    id=${id%%;*}",
             '    printf \'{"name": "%s", "id": "%s", "submitted": "%s"}\\n\' "$name" "$id" "$(date -u +%FT%TZ)" '
             f'>> {JOB_IDS}',
             '    echo "submitted $name as job $id" >&2',
             '    echo "$id"',
             "}"]
    variable = {}
    for i, job in enumerate(jobs, 1):
        variable[job["name"]] = f"job{i}"
        options = ""
        if job["after"]:
            ids = ":".join(f"${variable[a]}" for a in job["after"])
            options = f" --dependency={job['dependency']}:{ids}"
            options += " --kill-on-invalid-dep=yes" if job["dependency"] == "afterok" else ""
        lines.append(f"job{i}=$(submit {job['name']}{options})")
    return "\n".join(lines) + "\n"


def write_study(runs: Sequence[ModelRun], dataset_id, dataset_name: str, folds: Sequence[int], device: str,
                gpus: int = 1, sbatch_args: str = "") -> List[dict]:
    """Writes the job scripts, submit.sh and study.json for the unfinished models; returns the jobs in
    submission order (empty when every model is trained)."""
    if gpus < 0:
        raise TeachFormerError(f"--gpus {gpus}: give the number of GPUs per job (0 for CPU-only jobs).")
    if gpus == 0 and device == "cuda":
        raise TeachFormerError("--gpus 0 asks SLURM for no GPU, but --device cuda trains on one: add --device cpu "
                               "for CPU-only jobs, or ask for GPUs with --gpus 1.")
    if gpus > 1 and device != "cuda":
        raise TeachFormerError(f"--gpus {gpus} runs nnU-Net's multi-GPU training (-num_gpus {gpus}), which needs "
                               f"--device cuda.")
    try:
        extra = shlex.split(sbatch_args)
    except ValueError as e:
        raise TeachFormerError(f"--sbatch-args {sbatch_args!r} cannot be split like a shell line ({e}).") from e
    check_sbatch_args(extra, gpus)
    bad = [a for a in extra if not a.startswith("-")]
    if bad:
        raise TeachFormerError(f"--sbatch-args takes sbatch options such as \"--partition=gpu --time=48:00:00\"; "
                               f"{bad} are not options (write --option=value).")
    folder = slurm_folder(dataset_name)
    todo = [r for r in runs if not r.finished]
    if not todo:
        return []
    check_writable(folder, f"The job scripts are written there and the jobs train into nnUNet_results "
                           f"({folder.parent.parent}): make it writable, or set nnUNet_results to a folder you can "
                           f"write, with the dataset's models copied there.")
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    jobs = []
    teachers: Dict[int, List[str]] = {}
    for run in sorted(todo, key=lambda r: (r.role == "distilled", r.fold)):  # students after their teachers
        name = job_name(run)
        after = teachers.get(run.fold, []) if run.role == "distilled" else []
        if run.role == "teacher":
            teachers.setdefault(run.fold, []).append(name)
        slurm_name = f"tf{dataset_id}_{run.trainer}_f{run.fold}"
        (folder / f"{name}.sh").write_text(model_script(run, name, slurm_name, folder, gpus, extra))
        jobs.append({"name": name, "role": run.role, "trainer": run.trainer, "fold": run.fold,
                     "folder": str(run.folder), "after": after, "dependency": "afterok"})
    (folder / f"{REPORT_JOB}.sh").write_text(report_script(dataset_id, folds, device, folder,
                                                           f"tf{dataset_id}_report", gpus, extra))
    jobs.append({"name": REPORT_JOB, "role": "report", "trainer": None, "fold": None, "folder": None,
                 "after": [j["name"] for j in jobs], "dependency": "afterany"})
    (folder / "submit.sh").write_text(_submit_script(jobs))

    manifest_file = folder / MANIFEST
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {"jobs": {}}
    manifest["dataset"] = dataset_name
    manifest["jobs"].update({j["name"]: j for j in jobs})  # earlier submissions of other models stay listed
    manifest_file.write_text(json.dumps(manifest, indent=1))
    return jobs


def recorded_job_ids(folder: Path) -> Dict[str, str]:
    """The latest submitted SLURM job id of every job name, from jobs.jsonl."""
    ids = {}
    path = folder / JOB_IDS
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                ids[entry["name"]] = entry["id"]
    return ids


def queued_jobs(ids: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """{job id: {"state", "reason"}} of those ids that SLURM's queue still holds (pending or running)."""
    if not ids:
        return {}
    result = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"], capture_output=True, text=True)
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        raise TeachFormerError(f"squeue failed: {(result.stderr.strip().splitlines() or ['no message'])[-1]}")
    jobs = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = line.split("|", 2)
        jobs[job_id] = {"state": state, "reason": reason}
    return jobs


def submit(jobs: List[dict], dataset_name: str, log=print) -> Dict[str, str]:
    """Runs submit.sh after checking that none of these models is still queued from an earlier submission."""
    if shutil.which("sbatch") is None:
        raise TeachFormerError("sbatch is not on PATH: run this on a SLURM login node, or write the job scripts with "
                               "--write-only and submit them there with `bash submit.sh`.")
    folder = slurm_folder(dataset_name)
    previous = recorded_job_ids(folder)
    still = queued_jobs([previous[j["name"]] for j in jobs if j["name"] in previous])
    busy = [f"{name} (job {job_id}, {still[job_id]['state'].lower()})" for name, job_id in previous.items()
            if job_id in still and any(j["name"] == name for j in jobs)]
    if busy:
        raise TeachFormerError(f"{', '.join(busy)} from an earlier submission is still in SLURM's queue; submitting "
                               f"again would train the same model twice. Wait for it (`teachformer status`) or "
                               f"cancel it with scancel, then submit again.")
    result = subprocess.run(["bash", str(folder / "submit.sh")], capture_output=True, text=True)
    log(result.stderr.strip())
    ids = recorded_job_ids(folder)
    if result.returncode != 0:
        submitted = [ids[j["name"]] for j in jobs if ids.get(j["name"]) not in (None, previous.get(j["name"]))]
        cancel = f"cancel the {len(submitted)} job(s) it did submit (scancel {' '.join(submitted)}), then " \
            if submitted else ""
        raise TeachFormerError(f"submitting the study failed (exit code {result.returncode}; sbatch's message is "
                               f"above). The scripts are in {folder}: fix the cause, {cancel}run `bash "
                               f"{folder / 'submit.sh'}` or the same teachformer train command again.")
    return {j["name"]: ids[j["name"]] for j in jobs}
