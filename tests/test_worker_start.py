"""`worker_start` and the console script's end: nnU-Net's prediction workers come from the fork server only within
`nnunet_workers_forked`, and `teachformer predict` ends with its exit handlers run, its output written and its
status kept (end-to-end predictions through the console script: tests/test_e2e.py, tests/test_adopt.py)."""
import multiprocessing
import os
import subprocess
import sys

import pytest
from nnunetv2.inference import data_iterators, predict_from_raw_data

from nnunet_teachformer.inference import worker_start

pytestmark = pytest.mark.skipif(not worker_start.available(), reason="no forkserver on this platform")


def start_method_of_a_worker(context) -> str:
    queue = context.Queue()
    worker = context.Process(target=_put_start_method, args=(queue,))
    worker.start()
    method = queue.get(timeout=60)
    worker.join(timeout=60)
    return method


def _put_start_method(queue) -> None:
    queue.put(multiprocessing.get_start_method())


def test_nnunet_asks_for_spawn_and_gets_the_fork_server_only_within():
    with worker_start.nnunet_workers_forked():
        for module in (data_iterators, predict_from_raw_data):
            context = module.multiprocessing.get_context("spawn")
            assert context.get_start_method() == "forkserver"
            assert module.multiprocessing.get_context("fork").get_start_method() == "fork"
        assert start_method_of_a_worker(data_iterators.multiprocessing.get_context("spawn")) == "forkserver"
    for module in (data_iterators, predict_from_raw_data):
        assert module.multiprocessing is multiprocessing
        assert module.multiprocessing.get_context("spawn").get_start_method() == "spawn"


def _put_huge_page_advice(queue) -> None:
    import os

    import numpy
    queue.put((os.environ.get("NUMPY_MADVISE_HUGEPAGE"), numpy._core.multiarray._get_madvise_hugepage()))


def test_workers_run_without_numpys_huge_page_advice_and_the_command_keeps_its_own(monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    worker_start.start_fork_server()
    assert "NUMPY_MADVISE_HUGEPAGE" not in os.environ  # set for the server only
    with worker_start.nnunet_workers_forked():
        context = data_iterators.multiprocessing.get_context("spawn")
        queue = context.Queue()
        worker = context.Process(target=_put_huge_page_advice, args=(queue,))
        worker.start()
        assert queue.get(timeout=60) == ("0", False)
        worker.join(timeout=60)


def test_a_setting_of_ones_own_is_kept(monkeypatch):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    with worker_start._environment(NUMPY_MADVISE_HUGEPAGE="0", TEACHFORMER_TEST_ONLY="x"):
        assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "1" and os.environ["TEACHFORMER_TEST_ONLY"] == "x"
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "1" and "TEACHFORMER_TEST_ONLY" not in os.environ


def test_the_context_is_undone_when_the_prediction_fails():
    with pytest.raises(RuntimeError, match="inside"):
        with worker_start.nnunet_workers_forked():
            raise RuntimeError("inside")
    assert data_iterators.multiprocessing is multiprocessing


def test_teachformer_predict_ends_with_its_exit_handlers_output_and_status(tmp_path):
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('exit handler ran', flush=False))\n"
              "sys.argv = ['teachformer', 'predict', '-i', sys.argv[1], '-o', sys.argv[2], '-d', '999', "
              "'--device', 'cpu']\n"
              "print('buffered before the end', end='')\n"
              "from nnunet_teachformer.cli import console_main\n"
              "console_main()\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "in"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "teachformer: error" in result.stderr
    assert result.stdout.startswith("buffered before the end") and "exit handler ran" in result.stdout
