"""nnunet-teachformer built from its own sdist and installed from the wheel into a fresh virtual environment,
for the tests of the installed package (test_install.py, test_sharing.py). Built once per test session.

``python -m build --no-isolation`` builds the sdist from the repository and then the wheel from the unpacked
sdist, offline, with this environment's setuptools. A fresh ``python -m venv`` gets the wheel through
``pip install --no-deps --no-index``. Its third-party requirements (torch, nnU-Net, MONAI: gigabytes) are not
installed again: a ``.pth`` file in the fresh site-packages adds one folder of symbolic links to every
top-level entry of this environment's site-packages except nnunet-teachformer's own (package, dist-info,
start-up files, the editable install's finder). A plain sys.path folder, its .pth files are not run, so the
fresh environment's only nnunet-teachformer and only start-up hook are the wheel's. ``pip check`` then
confirms that the wheel's requirements are met there.

Commands run with the fresh interpreter, from a scratch folder (so the repository is not importable from the
working directory), without PYTHONPATH, nnUNet_extTrainer or the user site. nnU-Net's console scripts are not
in the fresh ``bin``; ``console_script`` runs their entry points from nnU-Net's dist-info, as the generated
scripts do.
"""
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWN_ENTRIES = ("nnunet_teachformer", "__editable__.nnunet_teachformer", "__editable___nnunet_teachformer")
DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "nnUNet_extTrainer", "VIRTUAL_ENV")
_built = {}


@dataclass(frozen=True)
class InstalledPackage:
    sdist: Path
    wheel: Path
    venv: Path
    site_packages: Path
    host_packages: Path  # the folder of links to this environment's third-party packages
    scratch: Path  # working directory of the commands

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def env(self, **update) -> dict:
        """This process's environment without the variables that would leak it in; ``update``: None unsets."""
        env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
        env["PYTHONNOUSERSITE"] = "1"
        for key, value in update.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    def run(self, args, env=None, timeout=900, check=True, **env_update) -> subprocess.CompletedProcess:
        result = subprocess.run([str(a) for a in args], env=env or self.env(**env_update), cwd=self.scratch,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n--- stdout (tail) ---\n"
                                 f"{result.stdout[-4000:]}\n--- stderr (tail) ---\n{result.stderr[-4000:]}")
        return result

    def console_script(self, name, *args, **kwargs) -> subprocess.CompletedProcess:
        code = ("import sys; from importlib.metadata import entry_points; "
                "(ep,) = entry_points(group='console_scripts', name=sys.argv[1]); "
                "sys.argv = sys.argv[1:]; sys.exit(ep.load()())")
        return self.run([self.python, "-c", code, name, *args], **kwargs)


def _build(out: Path):
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return sdist, wheel


def _link_host_packages(target: Path) -> None:
    import site
    host = Path(site.getsitepackages()[0])
    target.mkdir()
    for entry in host.iterdir():
        if entry.name.startswith(OWN_ENTRIES) or entry.suffix == ".pth":
            continue
        (target / entry.name).symlink_to(entry)


def installed_package(tmp_path_factory) -> InstalledPackage:
    """Builds and installs once per session; later calls return the same environment."""
    if "package" in _built:
        return _built["package"]
    root = tmp_path_factory.mktemp("installed_package")
    sdist, wheel = _build(root / "dist")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    host = root / "host_packages"
    _link_host_packages(host)
    (site_packages / "host_packages.pth").write_text(f"{host}\n")
    scratch = root / "scratch"
    scratch.mkdir()
    package = InstalledPackage(sdist, wheel, venv, site_packages, host, scratch)
    pip = [sys.executable, "-m", "pip", "--python", package.python, "--disable-pip-version-check"]
    package.run(pip + ["install", "--no-deps", "--no-index", "-q", wheel])
    package.run(pip + ["check"])
    _built["package"] = package
    return package


def archive_names(path: Path) -> list:
    """Member names of a zip (wheel, nnU-Net model zip) or of a tar.gz (sdist)."""
    if zipfile.is_zipfile(path):
        return zipfile.ZipFile(path).namelist()
    with tarfile.open(path) as archive:
        return archive.getnames()
