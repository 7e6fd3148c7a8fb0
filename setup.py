"""Packaging for nnunet-teachformer (``pyproject.toml`` holds the build-system table only).

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

from setuptools import find_packages, setup
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
    """``pip install -e .`` builds its wheel without build_py's outputs: add the start-up files there too."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        for name in STARTUP_FILES:
            shutil.copyfile(name, os.path.join(unpacked_wheel, name))
        return result


here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="nnunet-teachformer",
    version="0.1.0",
    description="Teach-Former multi-teacher knowledge distillation for 3D medical image segmentation, "
                "as an nnU-Net v2 plugin",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_teachformer", "nnunet_teachformer.*"]),
    package_data={"nnunet_teachformer": ["nnunet_ext/*.py"]},
    install_requires=[
        "nnunetv2>=2.8.0,<2.9",
        # nnunetv2 2.8 accepts torch>=2.1.2 except 2.9.*; its trainer lookup imports torchvision (via timm),
        # so torch and torchvision must be a matching pair: let pip pick both, or pre-install a pair.
        "torch>=2.1.2,!=2.9.*",
        "torchvision",
        "monai>=1.5",
        "batchgenerators>=0.25.1",
        "SimpleITK>=2.2.1",
        "nibabel",
        # the PI-CAI challenge's own preprocessing (resampling to T2W, cropping) for `teachformer convert picai22`
        "picai_prep>=2.1,<3",
        # PI-CAI's own scoring: lesion candidates from softmax (report_guided_annotation), AUROC/AP (picai_eval),
        # and the published fold assignment of the public baseline (picai_baseline.splits)
        "picai_eval>=1.4,<2",
        "report_guided_annotation>=0.3,<1",
        "picai_baseline>=0.8,<1",
        "numpy>=1.24",
        "scipy",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        # `teachformer export` (ONNX) and its check with onnxruntime
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        # the openvino path of `teachformer predict --device cpu` (nnunet_teachformer/inference/openvino_engine.py)
        "cpu": ["openvino>=2024.0"],
        # `build`: tests/test_install.py builds sdist and wheel with `python -m build --no-isolation`.
        # pytest < 9: pytest-xdist 3.8's --dist loadgroup (scripts/test) groups nothing on pytest 9.2, whose node
        # ids no longer take the group suffix it writes.
        "test": ["pytest>=8,<9", "pytest-timeout>=2.3", "pytest-xdist>=3.2", "onnx>=1.14", "onnxruntime>=1.16",
                 "openvino>=2024.0", "build>=1"],
    },
    entry_points={"console_scripts": ["teachformer=nnunet_teachformer.cli:main"]},
    cmdclass={"build_py": BuildPyWithStartupFiles, "editable_wheel": EditableWheelWithStartupFiles},
)
