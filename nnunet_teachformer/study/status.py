"""``teachformer status``: which model of which fold is done, running, waiting or failed, and why.

nnU-Net's results tree says which models are finished (``checkpoint_final.pth``) or started. For a study
submitted with ``teachformer train --submit slurm`` (``$nnUNet_results/<Dataset>/slurm/study.json``), the
state of every job comes from SLURM when its commands are here (``squeue`` for queued and running jobs,
``sacct`` or, on clusters without accounting, ``scontrol`` for ended ones) and from the exit code each job
script records, so a failure is still explained after SLURM has forgotten the job. A distilled student
that never ran because a teacher of its fold failed says so. Without a submission, every model folder of
the dataset is listed as done or interrupted.
"""
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.evaluation.results import (ROLE_DISTILLED, ROLE_NNUNET, ROLE_STUDENT, ROLE_TEACHER,
                                                   find_trainer_class, role_of)
from nnunet_teachformer.nnunet_paths import resolve_dataset
from nnunet_teachformer.study import slurm

RUNNING = ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT")
NOT_RUN = ("cancelled", "never ran")
ENDED = ("done", "failed") + NOT_RUN
ROLES = ("teacher", "baseline", "distilled", "report", "model")


@dataclass
class JobStatus:
    name: str
    role: str
    fold: Optional[int]
    model: str
    state: str  # done, running, waiting, failed, cancelled, never ran, not submitted, interrupted
    detail: str = ""
    job_id: Optional[str] = None


def _ended_jobs(ids: Sequence[str]) -> Tuple[Dict[str, Dict[str, str]], str]:
    """{job id: {"state", "reason"}} of ended jobs SLURM still knows, and which command told."""
    if not ids:
        return {}, ""
    result = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobIDRaw,State,Reason"],
                            capture_output=True, text=True) if shutil.which("sacct") else None
    if result is not None and result.returncode == 0:
        jobs = {}
        for line in result.stdout.splitlines():
            job_id, state, reason = (line.split("|") + ["", ""])[:3]
            jobs[job_id] = {"state": state.split()[0] if state else "", "reason": reason}
        return jobs, "sacct"
    jobs = {}  # no accounting database: scontrol knows jobs that ended less than MinJobAge ago
    for job_id in ids:
        result = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
        if result.returncode == 0:
            fields = dict(f.split("=", 1) for f in result.stdout.split() if "=" in f)
            jobs[job_id] = {"state": fields.get("JobState", ""), "reason": fields.get("Reason", "")}
    return jobs, "scontrol"


def _own_state(job: dict, job_id: Optional[str], queue: Optional[dict], ended: dict, folder: Path) -> Tuple[str, str]:
    """State and detail of one job; ``queue`` is None when SLURM could not be asked."""
    model = Path(job["folder"]) if job["folder"] else None
    finished = model is not None and (model / "checkpoint_final.pth").is_file()
    log = folder / "logs" / f"{job['name']}_{job_id}.out"
    if queue is not None and job_id in queue:  # a job that wrote checkpoint_final.pth still runs nnU-Net's validation
        state, reason = queue[job_id]["state"], queue[job_id]["reason"]
        if state in RUNNING:
            return "running", ("validating; " if finished else "") + f"log {log}"
        if state == "PENDING":
            if reason == "DependencyNeverSatisfied":
                return "never ran", "its dependency can no longer be satisfied"
            return "waiting", "for its dependencies" if reason == "Dependency" else f"queued ({reason})"
        return state.lower(), reason
    if finished:
        return "done", ""
    if job_id is None:
        started = model is not None and any(model.glob("checkpoint_*.pth"))
        return ("interrupted", "not submitted; resumes with --c") if started else ("not submitted", "")
    exit_file = folder / "exit" / job_id
    if exit_file.is_file():
        code = exit_file.read_text().strip()
        if code != "0":
            return "failed", f"exit code {code}; log {log}"
        if model is None:
            return "done", ""
        return "failed", f"the job ended without {model / 'checkpoint_final.pth'}; log {log}"
    if queue is None:
        return "unknown", "no exit record, and SLURM could not be asked"
    info = ended.get(job_id)
    if info and info["state"] == "CANCELLED":
        return "cancelled", info["reason"] if info["reason"] not in ("", "None") else "scancel"
    if info and info["state"] not in ("COMPLETED", ""):
        return "failed", f"SLURM state {info['state']} ({info['reason']}); log {log}"
    if log.is_file():
        return "failed", f"ended without recording its exit code (killed or out of time?); log {log}"
    return "never ran", "SLURM has no record of it left"


def _failed_dependencies(job: dict, states: Dict[str, JobStatus]) -> List[str]:
    if job["dependency"] != "afterok":
        return []
    return [f"{states[a].role} {states[a].model} fold {states[a].fold} {states[a].state}" for a in job["after"]
            if a in states and states[a].state in ("failed",) + NOT_RUN]


def submitted_study_status(folder: Path) -> Tuple[List[JobStatus], str]:
    """The status of every job in ``folder``'s study.json, and where SLURM's part came from."""
    manifest = json.loads((folder / slurm.MANIFEST).read_text())["jobs"]
    ids = slurm.recorded_job_ids(folder)
    known = [ids[name] for name in manifest if name in ids]
    source = "results tree; nothing submitted yet"
    queue, ended = {}, {}
    if known and not shutil.which("squeue"):
        queue, source = None, "results tree and the jobs' exit records; SLURM's commands are not on PATH"
    elif known:
        try:
            queue = slurm.queued_jobs(known)
        except TeachFormerError as e:
            queue, source = None, f"results tree and the jobs' exit records; {e}"
    if known and queue is not None:
        unexplained = [i for i in known if i not in queue and not (folder / "exit" / i).is_file()]
        ended, ended_source = _ended_jobs(unexplained)
        source = "results tree, job exit records, squeue" + (f", {ended_source}" if ended_source else "")
    states = {name: JobStatus(name, job["role"], job["fold"], job["trainer"] or "teachformer report",
                              *_own_state(job, ids.get(name), queue, ended, folder), ids.get(name))
              for name, job in manifest.items()}
    for name, job in manifest.items():  # only students wait (afterok) for others: teachers, which wait for none
        failed = _failed_dependencies(job, states)
        if failed and states[name].state in NOT_RUN + ("waiting", "unknown"):
            states[name].state, states[name].detail = "never ran", "because " + "; ".join(failed)
        elif states[name].detail == "for its dependencies":
            waits = [states[a] for a in job["after"] if a in states and states[a].state not in ENDED] \
                or [states[a] for a in job["after"] if a in states]
            states[name].detail = "for " + (", ".join(f"{w.model} fold {w.fold} (job {w.job_id})" for w in waits)
                                            if len(waits) <= 3 else f"{len(waits)} jobs")
    return list(states.values()), source


# the report's roles (evaluation.results.role_of, from the trainer class) in the words of a submitted study's jobs
STUDY_ROLES = {ROLE_TEACHER: "teacher", ROLE_STUDENT: "baseline", ROLE_NNUNET: "baseline", ROLE_DISTILLED: "distilled"}


def _role_of(trainer: str) -> str:
    """teacher, baseline or distilled as the trainer class says (``evaluation.results.role_of``); "model" for a
    trainer nnU-Net cannot find."""
    return STUDY_ROLES.get(role_of(find_trainer_class(trainer)), "model")


def results_tree_status(results: Path) -> List[JobStatus]:
    """Every fold folder of every model in the dataset's results: done or interrupted."""
    rows = []
    for fold_folder in sorted(results.glob("*__*__*/fold_*")):
        model = fold_folder.parent.name.split("__")[0]
        fold = fold_folder.name[len("fold_"):]
        if (fold_folder / "checkpoint_final.pth").is_file():
            state, detail = "done", ""
        elif any(fold_folder.glob("checkpoint_*.pth")):
            state, detail = "interrupted", "resumes with --c"
        else:
            state, detail = "not started", ""
        rows.append(JobStatus(fold_folder.parent.name, _role_of(model), int(fold) if fold.isdigit() else fold,
                              model, state, detail))
    return rows


def study_status(dataset) -> Tuple[str, List[JobStatus], str]:
    _, dataset_name = resolve_dataset(dataset, need_raw=False)
    folder = slurm.slurm_folder(dataset_name)
    if (folder / slurm.MANIFEST).is_file():
        rows, source = submitted_study_status(folder)
        return dataset_name, rows, f"jobs in {folder}; state from the {source}"
    return dataset_name, results_tree_status(folder.parent), "no SLURM submission; state from the results tree"


def format_status(dataset_name: str, rows: List[JobStatus], source: str) -> str:
    lines = [f"{dataset_name} ({source})",
             f"{'fold':<5} {'role':<10} {'model':<44} {'state':<14} {'job':<8} detail"]
    for r in sorted(rows, key=lambda r: (r.fold is None, str(r.fold).zfill(3), ROLES.index(r.role))):
        fold = "-" if r.fold is None else str(r.fold)
        lines.append(f"{fold:<5} {r.role:<10} {r.model:<44} {r.state:<14} {r.job_id or '-':<8} {r.detail}".rstrip())
    if not rows:
        lines.append("(no model folders yet)")
    return "\n".join(lines)
