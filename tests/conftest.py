"""Shared fixtures: an isolated nnU-Net folder tree, the phantom dataset, and a runner for the real CLIs.

Everything nnU-Net writes goes under one session temporary folder. The expensive steps (planning,
preprocessing, training tiny models) run once per session and are shared by the tests that need them; under
pytest-xdist (scripts/test), once per worker session, and the grouping below keeps each on one worker.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLOW_PHASE_S = 60  # test phases (setup, call, teardown) at least this long are logged as they end
_suite = {}


def _worker_cores():
    """Under pytest-xdist, the cores of this worker: an equal share of this process's cores (gw0 the first ones),
    which the worker and every command it starts keep to. None outside xdist, with more workers than cores, or
    where the system sets no affinity (macOS)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if count > len(cores):
        return None
    index, share = int(worker.lstrip("gw")), len(cores) // count
    return cores[index * share:(index + 1) * share]


def pytest_configure(config):
    _suite.update(started=time.time(), config=config)
    cores = _worker_cores()
    if cores:
        # nnUNetv2_train and nnUNetv2_predict set PyTorch's threads to all of the machine's cores whatever
        # OMP_NUM_THREADS says: kept to this worker's cores, their threads sleep while they wait for each other
        # (OMP_WAIT_POLICY=PASSIVE) instead of spinning on the other worker's core.
        os.sched_setaffinity(0, cores)
        os.environ.update(OMP_NUM_THREADS=str(len(cores)), OMP_WAIT_POLICY="PASSIVE")
        import torch
        torch.set_num_threads(len(cores))


def pytest_runtest_logreport(report):
    """Logs every slow test phase with the suite's elapsed time, so that a CI run cut off by its time limit
    still shows in its last lines where the time went."""
    terminal = _suite["config"].pluginmanager.get_plugin("terminalreporter")
    if report.duration >= SLOW_PHASE_S and terminal is not None:
        elapsed = time.time() - _suite["started"]
        terminal.write_line(f"\n[{elapsed / 60:5.1f} min] {report.duration:4.0f} s {report.when} {report.nodeid}")


# Fixtures that plan and preprocess a dataset or train on it (a minute or more each): the session's phantom and
# trained models, test_report.py's results tree, test_planner.py's planned phantoms. A test that uses one, itself
# or through another fixture, is marked slow; so are the modules and tests that run commands end to end (their
# own pytestmark or mark). `pytest -m "not slow"` runs the rest in a few minutes.
SLOW_FIXTURES = {"phantom", "trained", "report_tree", "iso", "aniso"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups, and before -m deselects
def pytest_collection_modifyitems(items):
    """scripts/test runs the suite on two pytest-xdist workers (--dist loadgroup), each with its own session
    fixtures. Every module that uses the session's trained models runs on one worker, and each other module
    whole on one worker, so that no model, dataset or service (SLURM) of a fixture is built twice. Also marks
    the users of SLOW_FIXTURES slow."""
    uses_trained = {item.module.__name__ for item in items if "trained" in item.fixturenames}
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("trained" if module in uses_trained else module))
        if SLOW_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.slow)


DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID}_TeachFormerPhantom"
CPU_ENV = {
    "nnUNet_compile": "f",  # torch.compile is slow to start and unsupported for some networks on CPU
    "nnUNet_n_proc_DA": "0",  # augmentation in the training process: ~17 % faster for these tiny runs
    "nnUNet_def_n_proc": "1",
}


def planning_env():
    """The session's environment for nnUNetv2_plan_and_preprocess, whose planner (nnU-Net 2.8) cannot take
    nnUNet_n_proc_DA=0 (``teachformer plan`` can)."""
    return dict(os.environ, nnUNet_n_proc_DA="1")


def run_cli(args, env=None, timeout=900, check=True):
    """Runs a console command with the session's nnU-Net environment; shows its output when it fails.

    The command runs in its own process group, which is killed as a whole at the timeout: the children it
    starts (nnUNetv2_train, nnU-Net's workers) would otherwise keep its output pipes open and make
    ``subprocess.run``'s own timeout wait for them forever."""
    args = [str(a) for a in args]
    with subprocess.Popen(args, env=env or os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            stdout, stderr = process.communicate()
            raise AssertionError(f"{' '.join(args)} did not end within {timeout} s\n--- stdout (tail) ---\n"
                                 f"{stdout[-4000:]}\n--- stderr (tail) ---\n{stderr[-4000:]}") from None
    result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n"
                             f"--- stdout (tail) ---\n{result.stdout[-4000:]}\n--- stderr (tail) ---\n{result.stderr[-4000:]}")
    return result


def kill_group(process):
    """SIGKILL to ``process``'s process group (it was started with ``start_new_session=True``)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def console_script(name):
    """Path of an installed console script in this interpreter's environment."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def usable_cores():
    """Cores this process may run on (one per pytest-xdist worker under scripts/test): OpenVINO uses no more
    threads than that, whatever it is asked for."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.fixture(scope="session")
def nnunet_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    dirs = {k: root / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    memory = {"TEACHFORMER_CACHE_DIR": str(root / "cache")}  # auto's CPU path measurements: the session's own
    saved = {k: os.environ.get(k) for k in list(dirs) + list(CPU_ENV) + list(memory)}
    for k, v in dirs.items():
        v.mkdir()
        os.environ[k] = str(v)
    os.environ.update(CPU_ENV, **memory)
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
             "--verify_dataset_integrity"], env=planning_env())
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


def fabricate_model(results, trainer, preprocessed, configuration=CONFIG) -> Path:
    """``trainer`` fold 0 on TeachFormerPlans as nnUNetv2_train would leave it, with initial (untrained) weights:
    plans.json, dataset.json, fold_0/checkpoint_final.pth under ``results``; ``preprocessed`` is the dataset's
    nnUNet_preprocessed folder. For checks that refuse a model before its weights matter."""
    import json

    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_teachformer import trainers
    model = Path(results) / DATASET_NAME / f"{trainer}__{TEACHFORMER_PLANS}__{configuration}"
    (model / "fold_0").mkdir(parents=True)
    plans = json.loads((Path(preprocessed) / f"{TEACHFORMER_PLANS}.json").read_text())
    dataset_json = json.loads((Path(preprocessed) / "dataset.json").read_text())
    (model / "plans.json").write_text(json.dumps(plans))
    (model / "dataset.json").write_text(json.dumps(dataset_json))
    manager = PlansManager(plans)
    torch.manual_seed(0)
    network = getattr(trainers, trainer).build_network_architecture(
        manager, manager.get_configuration(configuration), len(dataset_json["channel_names"]),
        manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    axes = tuple(range(len(manager.get_configuration(configuration).patch_size)))
    torch.save({"network_weights": network.state_dict(), "trainer_name": trainer,
                "init_args": {"plans": plans, "configuration": configuration, "fold": 0, "dataset_json": dataset_json},
                "inference_allowed_mirroring_axes": axes}, model / "fold_0" / "checkpoint_final.pth")
    return model


def train_command(trainer, fold=0, plans=TEACHFORMER_PLANS, *extra):
    return [console_script("nnUNetv2_train"), DATASET_ID, CONFIG, fold, "-p", plans, "-tr", trainer, "-device", "cpu",
            *extra]
