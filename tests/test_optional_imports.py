"""A package that only an extra installs (pyproject.toml's optional-dependencies), when missing, stops the command
that needs it with one sentence naming the extra; nothing else imports it. A missing package is simulated with
None in sys.modules, which makes importing it raise ImportError."""
import subprocess
import sys

import pytest

from nnunet_teachformer.cli import main
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.optional_imports import optional_import

EXTRA_MODULES = ("picai_prep", "picai_eval", "report_guided_annotation", "picai_baseline", "onnx", "onnxruntime",
                 "openvino")


def _missing(monkeypatch, *modules):
    """``modules`` as if not installed, and ours that import them imported afresh."""
    for module in [m for m in sys.modules if m.split(".")[0] in modules]:  # a cached submodule would be found
        monkeypatch.delitem(sys.modules, module)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    for ours in ("nnunet_teachformer.evaluation.picai", "nnunet_teachformer.conversion.picai22"):
        monkeypatch.delitem(sys.modules, ours, raising=False)


def _error(capsys, argv):
    assert main(argv) == 2
    return capsys.readouterr().err.strip()


def test_the_message_names_the_package_and_the_extra(monkeypatch):
    _missing(monkeypatch, "picai_eval")
    with pytest.raises(TeachFormerError) as error:
        optional_import("picai_eval.image_utils", "read_label", extra="picai", purpose="PI-CAI 2022 scoring")
    assert str(error.value) == ("PI-CAI 2022 scoring needs picai_eval, which is not installed: "
                                "pip install 'nnunet-teachformer[picai]'")


def test_a_package_that_fails_to_import_is_not_called_missing(monkeypatch, tmp_path):
    (tmp_path / "broken_extra_package.py").write_text("import no_such_module_of_its_own\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(TeachFormerError, match=r"^ONNX export needs broken_extra_package, which failed to import "
                                               r"\(No module named 'no_such_module_of_its_own'\): pip install "
                                               r"'nnunet-teachformer\[export\]'$"):
        optional_import("broken_extra_package", extra="export", purpose="ONNX export")


def test_optional_import_returns_the_module_or_its_attribute():
    import json
    assert optional_import("json", extra="x", purpose="y") is json
    assert optional_import("json", "dumps", extra="x", purpose="y") is json.dumps


@pytest.mark.parametrize("module", ["picai_eval", "report_guided_annotation"])
def test_evaluate_picai22_without_the_picai_extra(monkeypatch, capsys, tmp_path, module):
    _missing(monkeypatch, module)
    assert _error(capsys, ["evaluate", "picai22", "--predictions", str(tmp_path), "--labels", str(tmp_path)]) == (
        f"teachformer: error: PI-CAI 2022 scoring needs {module}, which is not installed: "
        f"pip install 'nnunet-teachformer[picai]'")


def test_convert_picai22_without_the_picai_extra(monkeypatch, capsys, tmp_path):
    _missing(monkeypatch, "picai_prep")
    assert _error(capsys, ["convert", "picai22", str(tmp_path), str(tmp_path), "--out", str(tmp_path)]) == (
        "teachformer: error: PI-CAI 2022 conversion needs picai_prep, which is not installed: "
        "pip install 'nnunet-teachformer[picai]'")


def test_published_folds_without_picai_baseline(monkeypatch):
    from nnunet_teachformer.conversion import picai22
    _missing(monkeypatch, "picai_baseline")
    with pytest.raises(TeachFormerError, match=r"needs picai_baseline, which is not installed: pip install "
                                               r"'nnunet-teachformer\[picai\]'$"):
        picai22.published_folds()


def test_export_onnx_without_the_export_extra(monkeypatch, capsys, tmp_path):
    _missing(monkeypatch, "onnx")
    assert _error(capsys, ["export", "-d", "990", "-f", "0", "-o", str(tmp_path / "student.onnx")]) == (
        "teachformer: error: ONNX export needs onnx, which is not installed: pip install 'nnunet-teachformer[export]'")


@pytest.mark.slow  # a fresh interpreter imports nnU-Net: ~10 s
def test_the_cli_and_the_trainers_import_no_package_of_an_extra():
    """nnU-Net's trainer lookup imports every trainer, and `teachformer --help` the CLI: neither may need an extra."""
    code = ("import sys; import nnunet_teachformer.cli, nnunet_teachformer.trainers; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {EXTRA_MODULES!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
