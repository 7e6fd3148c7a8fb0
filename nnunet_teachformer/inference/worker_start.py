"""nnU-Net's prediction workers started from a fork server instead of as fresh interpreters.

nnU-Net starts its preprocessing workers and its export pool with the ``spawn`` method: each is a new Python that
imports PyTorch and nnU-Net before it does anything, 2-3 s of CPU per worker (four of them for two cases with
``teachformer predict``'s defaults), at the start of a prediction, while the first case waits to be preprocessed.
``start_fork_server`` starts Python's ``forkserver`` once, early (it imports those modules beside the predict
command's own imports), and within ``nnunet_workers_forked`` nnU-Net's inference modules get that method where
they ask for ``spawn``: each worker is then a fork of the server, a clean single-threaded process that has
imported what the worker runs. What the workers receive and do is unchanged (arguments are pickled as with
spawn). Where the platform has no forkserver (Windows), nnU-Net's spawn is left as it is.
"""
import contextlib
import multiprocessing
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
    forkserver.ensure_running()


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
