"""The folder nnU-Net searches for our trainers, and the start-up hook that points it here.

nnU-Net 2.8 looks up trainers it does not ship in the folders listed in ``nnUNet_extTrainer``
(importing every module there). This folder holds one shim module that re-exports our trainers,
so the classes nnU-Net finds keep their canonical module ``nnunet_teachformer.trainers...`` and
checkpoints pickle and load as usual.

``register_ext_trainer_dir`` appends this folder to ``nnUNet_extTrainer``, keeping the user's own folders;
importing this package calls it once. At interpreter start-up, ``nnunet_teachformer.start`` names it as a
PEP 829 entry point (Python 3.15+, where that file also switches off the import line of the .pth file of the
same name) and ``nnunet_teachformer.pth`` imports this package on older interpreters. Where neither runs
(``python -S``, an embedded interpreter, a Python that no longer runs .pth import lines),
``teachformer env`` prints the ``export nnUNet_extTrainer=...`` line to use instead.

The same hook makes the Python processes started inside ``workers_ignore_ctrl_c`` (nnU-Net's multiprocessing
workers) ignore Ctrl-C: a terminal sends SIGINT to the whole foreground process group, and a worker that takes it
prints a KeyboardInterrupt traceback of its own (or dies mid-task, which can leave nnU-Net's pool waiting on it
forever), while the parent alone should stop the pool, whose exit terminates the workers, and print one line.
"""
import contextlib
import os
import signal

EXT_TRAINER_DIR = os.path.dirname(os.path.abspath(__file__))


def register_ext_trainer_dir(environ=os.environ) -> str:
    """Appends this folder to ``nnUNet_extTrainer`` unless it is already listed; returns the new value."""
    current = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if not any(os.path.abspath(p) == EXT_TRAINER_DIR for p in current):
        current.append(EXT_TRAINER_DIR)
    environ["nnUNet_extTrainer"] = os.pathsep.join(current)
    return environ["nnUNet_extTrainer"]


WORKERS_IGNORE_CTRL_C = "TEACHFORMER_WORKERS_IGNORE_CTRL_C"


@contextlib.contextmanager
def workers_ignore_ctrl_c():
    """Processes of this Python environment started inside the block ignore SIGINT; this one does not. The
    variable names this process, so that a first import of this module inside the block (here, or in a test
    process, whose children would inherit the ignored signal) leaves its own Ctrl-C alone."""
    os.environ[WORKERS_IGNORE_CTRL_C] = str(os.getpid())
    try:
        yield
    finally:
        os.environ.pop(WORKERS_IGNORE_CTRL_C, None)


def _ignore_ctrl_c_if_a_worker() -> None:
    parent = os.environ.get(WORKERS_IGNORE_CTRL_C)
    if parent and parent != str(os.getpid()):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


register_ext_trainer_dir()
_ignore_ctrl_c_if_a_worker()
