"""Shared fixtures: an isolated nnU-Net folder tree, the phantom dataset, and a runner for the real CLIs.

Everything nnU-Net writes goes under one session temporary folder. The expensive steps (planning,
preprocessing, training tiny models) run once per session and are shared by the tests that need them.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID}_TeachFormerPhantom"
CPU_ENV = {
    "nnUNet_compile": "f",  # torch.compile is slow to start and unsupported for some networks on CPU
    "nnUNet_n_proc_DA": "1",
    "nnUNet_def_n_proc": "1",
    "OMP_NUM_THREADS": "2",
}


def run_cli(args, env=None, timeout=900, check=True):
    """Runs a console command with the session's nnU-Net environment; shows its output when it fails."""
    result = subprocess.run([str(a) for a in args], env=env or os.environ.copy(), capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n"
                             f"--- stdout (tail) ---\n{result.stdout[-4000:]}\n--- stderr (tail) ---\n{result.stderr[-4000:]}")
    return result


def console_script(name):
    """Path of an installed console script in this interpreter's environment."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def nnunet_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    dirs = {k: root / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    saved = {k: os.environ.get(k) for k in list(dirs) + list(CPU_ENV)}
    for k, v in dirs.items():
        v.mkdir()
        os.environ[k] = str(v)
    os.environ.update(CPU_ENV)
    yield dirs
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def phantom(nnunet_dirs):
    """Dataset 990: 10 training + 2 held-out phantom cases, preprocessed with nnUNetPlans and TeachFormerPlans."""
    run_cli([console_script("teachformer"), "convert", "synthetic", "--dataset-id", DATASET_ID, "--cases", 10,
             "--test-cases", 2])
    run_cli([console_script("nnUNetv2_plan_and_preprocess"), "-d", DATASET_ID, "-c", "3d_fullres", "-np", 1,
             "--verify_dataset_integrity"])
    run_cli([console_script("teachformer"), "plan", "-d", DATASET_ID, "-c", "3d_fullres"])
    return nnunet_dirs["nnUNet_raw"] / DATASET_NAME


TEACHFORMER_PLANS = "TeachFormerPlans"
CONFIG = "3d_fullres"
# trained through nnUNetv2_train directly; the baseline and distilled students come from `teachformer train`
DIRECT_TRAINERS = ("HDenseFormerTrainer_tiny", "SwinUNETRTrainer_tiny", "UNETRTrainer_tiny", "UNetTrainer_tiny")
STUDY_TRAINERS = ("HDenseFormerLightTrainer_tiny", "TeachFormerTrainer_tiny")


def model_folder(results_root, trainer, plans=TEACHFORMER_PLANS):
    return Path(results_root) / DATASET_NAME / f"{trainer}__{plans}__{CONFIG}"


@pytest.fixture(scope="session")
def trained(phantom, nnunet_dirs):
    """Fold 0 of every tiny architecture trainer and of the distilled student, on TeachFormerPlans.

    Returns {"folders": {trainer: model folder}, "study_output": stdout of `teachformer train`}.
    """
    for trainer in DIRECT_TRAINERS:
        run_cli([console_script("nnUNetv2_train"), DATASET_ID, CONFIG, 0, "-p", TEACHFORMER_PLANS, "-tr", trainer,
                 "-device", "cpu"])
    study = run_cli([console_script("teachformer"), "train", "-d", DATASET_ID, "-f", 0, "--preset", "tiny",
                     "--device", "cpu"])
    folders = {t: model_folder(nnunet_dirs["nnUNet_results"], t) for t in DIRECT_TRAINERS + STUDY_TRAINERS}
    return {"folders": folders, "study_output": study.stdout}


PROBE_TRAINERS = Path(__file__).parent / "probe_trainers"


def probe_env(**extra):
    """The session's environment plus the test-only trainers of tests/probe_trainers for nnU-Net's lookup."""
    return dict(os.environ, nnUNet_extTrainer=str(PROBE_TRAINERS), **{k: str(v) for k, v in extra.items()})


def train_command(trainer, fold=0, plans=TEACHFORMER_PLANS, *extra):
    return [console_script("nnUNetv2_train"), DATASET_ID, CONFIG, fold, "-p", plans, "-tr", trainer, "-device", "cpu",
            *extra]
