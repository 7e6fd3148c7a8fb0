"""nnU-Net finds our trainers with no manual step, in a fresh interpreter, for both kinds of install: this
environment's editable install, and the wheel built from the sdist by `python -m build` and installed into a
fresh virtual environment (installed_package.py says how it is made cheaply); and without any start-up hook,
from the PEP 829 entry point alone or from the line `teachformer env` prints. The installed wheel's tiny
prediction is in test_sharing.py (a shared model predicted in that environment)."""
import os
import shlex
import subprocess
import sys

import pytest

from installed_package import REPO, archive_names, installed_package

STARTUP_FILES = ("nnunet_teachformer.pth", "nnunet_teachformer.start")
LOOKUP = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
          "print('MODULE=' + f('{name}').__module__)")
pytestmark = pytest.mark.slow  # builds sdist and wheel, installs them, runs fresh interpreters


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
    lines = [line for line in result.stdout.splitlines() if line.startswith(("EXT=", "MODULE="))]
    assert lines[0].split("=", 1)[1].split(os.pathsep)[0] == str(tmp_path)  # theirs first, ours appended
    assert lines[1] == "MODULE=my_trainers"
    assert lines[2].startswith("MODULE=nnunet_teachformer.trainers.")


def test_unknown_trainer_is_reported_by_name():
    result = _fresh_python(LOOKUP.format(name="NoSuchTrainer"))
    assert result.returncode != 0
    assert "NoSuchTrainer" in result.stderr


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return installed_package(tmp_path_factory)


def test_sdist_and_the_wheel_built_from_it_carry_the_startup_files(package):
    root = package.sdist.name[:-len(".tar.gz")]
    sdist = archive_names(package.sdist)
    assert {f"{root}/{name}" for name in STARTUP_FILES + ("pyproject.toml", "setup.py")} <= set(sdist)
    wheel = archive_names(package.wheel)
    assert set(STARTUP_FILES) <= set(wheel)  # at the root: they land in site-packages itself
    assert "nnunet_teachformer/nnunet_ext/nnunet_teachformer_trainers.py" in wheel
    for name in STARTUP_FILES:  # as installed by pip from the wheel
        assert (package.site_packages / name).read_text() == (REPO / name).read_text()


def test_installed_wheel_registers_our_trainers_in_a_fresh_environment(package):
    code = ("import os, inspect; print('EXT=' + os.environ['nnUNet_extTrainer']); " + LOOKUP.format(
        name="TeachFormerTrainer") + "; print('FILE=' + inspect.getfile(f('TeachFormerTrainer')))")
    result = package.run([package.python, "-c", code])
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith(("EXT=", "MODULE=",
                                                                                                "FILE=")))
    assert values["EXT"] == str(package.site_packages / "nnunet_teachformer" / "nnunet_ext")
    assert values["MODULE"] == "nnunet_teachformer.trainers.teachformer"
    assert values["FILE"].startswith(str(package.site_packages / "nnunet_teachformer"))


def _without_site(package, code, **env):
    """``python -S``: no site-packages processing, so neither .pth nor .start files run; the fresh environment's
    packages are appended to sys.path by hand (after the standard library, as site.py would)."""
    paths = [str(package.site_packages), str(package.host_packages)]
    return package.run([package.python, "-S", "-c", f"import sys; sys.path.extend({paths!r})\n" + code], check=False,
                       **env)


def test_without_a_startup_hook_nnunet_does_not_find_our_trainers(package):
    result = _without_site(package, LOOKUP.format(name="TeachFormerTrainer"))
    assert result.returncode != 0 and "Could not find requested nnunet trainer TeachFormerTrainer" in result.stderr


def test_pep829_start_file_entry_point_alone_registers_our_trainers(package):
    """What Python 3.15's site.py does with a ``<name>.start`` file: every line that is not blank or a comment is
    a ``pkg.mod:callable`` entry point, resolved with pkgutil.resolve_name and called without arguments."""
    start_files = sorted(package.site_packages.glob("*.start"))
    assert [p.name for p in start_files] == ["nnunet_teachformer.start"]
    code = ("import pkgutil\n"
            f"for line in open({str(start_files[0])!r}, encoding='utf-8-sig'):\n"
            "    line = line.strip()\n"
            "    if line and not line.startswith('#'):\n"
            "        assert ':' in line, line\n"
            "        pkgutil.resolve_name(line)()\n" + LOOKUP.format(name="TeachFormerTrainer").replace("; ", "\n"))
    result = _without_site(package, code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MODULE=nnunet_teachformer.trainers.teachformer" in result.stdout


def test_teachformer_env_prints_the_export_line_that_needs_no_startup_hook(package, tmp_path):
    printed = package.run([package.venv / "bin" / "teachformer", "env"], nnUNet_extTrainer=tmp_path).stdout.strip()
    words = shlex.split(printed)
    assert words[0] == "export" and words[1].startswith("nnUNet_extTrainer=")
    value = words[1].split("=", 1)[1]
    ours = str(package.site_packages / "nnunet_teachformer" / "nnunet_ext")
    assert value.split(os.pathsep) == [str(tmp_path), ours]  # the user's folder kept, ours appended
    result = _without_site(package, LOOKUP.format(name="UNETRTrainer"), nnUNet_extTrainer=value)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MODULE=nnunet_teachformer.trainers." in result.stdout
