"""nnU-Net finds our trainers with no manual step, in a fresh interpreter, for both kinds of install."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOKUP = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
          "print('MODULE=' + f('{name}').__module__)")


def _fresh_python(code, env_update=None, unset=("nnUNet_extTrainer",)):
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(env_update or {})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_lookup_without_nnunet_ext_trainer_set():
    for name in ("SwinUNETRTrainer", "TeachFormerTrainer_tiny"):
        result = _fresh_python(LOOKUP.format(name=name))
        assert result.returncode == 0, result.stderr[-3000:]
        module = result.stdout.strip().splitlines()[-1]
        assert module.startswith("MODULE=nnunet_teachformer.trainers."), module


def test_users_own_ext_trainer_folders_are_kept(tmp_path):
    (tmp_path / "my_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class MyLabTrainer(nnUNetTrainer):\n    pass\n")
    code = ("import os; print('EXT=' + os.environ['nnUNet_extTrainer']); " + LOOKUP.format(name="MyLabTrainer")
            + "; " + LOOKUP.format(name="UNETRTrainer").split("; ", 1)[1])
    result = _fresh_python(code, {"nnUNet_extTrainer": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [l for l in result.stdout.splitlines() if l.startswith(("EXT=", "MODULE="))]
    assert lines[0].split("=", 1)[1].split(os.pathsep)[0] == str(tmp_path)  # theirs first, ours appended
    assert lines[1] == "MODULE=my_trainers"
    assert lines[2].startswith("MODULE=nnunet_teachformer.trainers.")


def test_unknown_trainer_is_reported_by_name():
    result = _fresh_python(LOOKUP.format(name="NoSuchTrainer"))
    assert result.returncode != 0
    assert "NoSuchTrainer" in result.stderr


def test_wheel_ships_the_startup_file_and_it_works_from_site_packages(tmp_path):
    """`pip install .` (a wheel) gets the .pth too: install the wheel into a folder, process it as a site dir."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "wheel").glob("nnunet_teachformer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnunet_teachformer.pth" in names
    assert "nnunet_teachformer/nnunet_ext/nnunet_teachformer_trainers.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # -S: no site-packages of this environment (whose editable install would answer instead)
    code = "import site, os; site.addsitedir({site!r}); print('EXT=' + os.environ['nnUNet_extTrainer'])".format(
        site=str(site))
    result = subprocess.run([sys.executable, "-S", "-c", code], env={k: v for k, v in os.environ.items()
                                                               if k != "nnUNet_extTrainer"},
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"EXT={site / 'nnunet_teachformer' / 'nnunet_ext'}"
