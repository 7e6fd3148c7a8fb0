"""nnU-Net's prediction workers started from a fork server instead of as fresh interpreters.

nnU-Net starts its preprocessing workers and its export pool with the ``spawn`` method: each is a new Python that
imports PyTorch and nnU-Net before it does anything, 2-3 s of CPU per worker (four of them for two cases with
``teachformer predict``'s defaults), at the start of a prediction, while the first case waits to be preprocessed.
``start_fork_server`` starts Python's ``forkserver`` once, early (it imports those modules beside the predict
command's own imports), and within ``nnunet_workers_forked`` nnU-Net's inference modules get that method where
they ask for ``spawn``: each worker is then a fork of the server, a clean single-threaded process that has
imported what the worker runs. What the workers receive and do is unchanged (arguments are pickled as with
spawn). Where the platform has no forkserver (Windows), nnU-Net's spawn is left as it is.

The server and so the workers run with NumPy's huge-page advice off (``NUMPY_MADVISE_HUGEPAGE=0``, unless it is
set). A worker is a fresh process whose first large arrays (a case's float64 copies: 256 MB for a 512 x 512 x
61 CT's two classes) fault in all their memory; where the kernel compacts memory to make huge pages for memory
so advised (transparent_hugepage/defrag ``madvise``, a common default), that stalled a fragmented machine here
for seconds: exporting one lung CT took 3.2-3.5 s in a fresh process with the advice, 1.8 s without, and
waiting for the last export and the first case's preprocessing took 3-5 s less.
"""
import contextlib
import multiprocessing
import os
from typing import Iterator

# what nnU-Net's preprocessing workers and export pool run (data_iterators, export_prediction) and where it asks
# for its start method (data_iterators, predict_from_raw_data)
PRELOAD = ("nnunetv2.inference.data_iterators", "nnunetv2.inference.export_prediction")
ASKING = ("nnunetv2.inference.data_iterators", "nnunetv2.inference.predict_from_raw_data")


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def start_fork_server() -> None:
    """Starts the fork server, which imports ``PRELOAD`` in the background; returns at once."""
    if not available():
        return
    from multiprocessing import forkserver
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", *PRELOAD])
    with _environment(NUMPY_MADVISE_HUGEPAGE="0"):
        forkserver.ensure_running()


@contextlib.contextmanager
def _environment(**defaults: str) -> Iterator[None]:
    """Within: the environment variables ``defaults`` set where they are not (for processes started now)."""
    added = {name: value for name, value in defaults.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


class _ForkserverForSpawn:
    """The ``multiprocessing`` module as nnU-Net's modules see it within ``nnunet_workers_forked``."""

    def __getattr__(self, name):
        return getattr(multiprocessing, name)

    @staticmethod
    def get_context(method=None):
        return multiprocessing.get_context("forkserver" if method == "spawn" else method)


@contextlib.contextmanager
def nnunet_workers_forked() -> Iterator[None]:
    """Within: nnU-Net's inference modules start their workers from the fork server (started now if it is not)."""
    if not available():
        yield
        return
    import importlib
    start_fork_server()
    modules = [importlib.import_module(name) for name in ASKING]
    for module in modules:
        module.multiprocessing = _ForkserverForSpawn()
    try:
        yield
    finally:
        for module in modules:
            module.multiprocessing = multiprocessing
