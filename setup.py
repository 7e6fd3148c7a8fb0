"""The build commands of nnunet-teachformer; its metadata is in ``pyproject.toml``.

Besides the package itself, sdist and wheel carry two start-up files that add our trainer folder to
``nnUNet_extTrainer``, so ``nnUNetv2_train -tr <OurTrainer>`` and ``nnUNetv2_predict`` find our classes with
no manual step (see nnunet_teachformer/nnunet_ext): ``nnunet_teachformer.pth`` (an import line, run by every
Python up to 3.19 unless the .start file below replaces it) and ``nnunet_teachformer.start`` (its PEP 829
successor, a ``module:callable`` entry point run by Python 3.15+). Both must sit at the root of
site-packages: ``build_py`` copies them there and reports them as its source files, so ``sdist`` packs them
too and a wheel built from the sdist (what ``python -m build`` does) has them.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

STARTUP_FILES = ("nnunet_teachformer.pth", "nnunet_teachformer.start")


class BuildPyWithStartupFiles(build_py):
    """Places the start-up files at the root of site-packages, next to the package."""

    def run(self):
        super().run()
        for name in STARTUP_FILES:
            self.copy_file(name, os.path.join(self.build_lib, name), preserve_mode=False)

    def get_source_files(self):
        # sdist packs the source files of the build commands (setuptools' SubCommand protocol)
        return super().get_source_files() + list(STARTUP_FILES)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, n) for n in STARTUP_FILES]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        mapping.update({os.path.join(self.build_lib, n): n for n in STARTUP_FILES})
        return mapping


class EditableWheelWithStartupFiles(editable_wheel):
    """``pip install -e .`` builds its wheel without build_py's outputs: add the start-up files there too.

    A private method: setuptools (up to 84 at least) has no supported way to put a file at the root of an editable
    wheel (build outputs stay in the source tree or a link folder; ``data_files`` land in the prefix)."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        for name in STARTUP_FILES:
            shutil.copyfile(name, os.path.join(unpacked_wheel, name))
        return result


setup(cmdclass={"build_py": BuildPyWithStartupFiles, "editable_wheel": EditableWheelWithStartupFiles})
