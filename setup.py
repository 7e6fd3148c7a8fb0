"""Packaging for nnunet-teachformer.

Besides the package itself, the wheel carries ``nnunet_teachformer.pth``: a start-up line that
adds our trainer folder to ``nnUNet_extTrainer``, so ``nnUNetv2_train -tr <OurTrainer>`` and
``nnUNetv2_predict`` find our classes with no manual step (see nnunet_teachformer/nnunet_ext).
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_FILE = "nnunet_teachformer.pth"


class BuildPyWithPth(build_py):
    """Places the start-up .pth file at the root of site-packages, next to the package."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, PTH_FILE)
        self.copy_file(PTH_FILE, target, preserve_mode=False)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_FILE)]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        mapping[os.path.join(self.build_lib, PTH_FILE)] = PTH_FILE
        return mapping


class EditableWheelWithPth(editable_wheel):
    """``pip install -e .`` builds its wheel without build_py's outputs: add the .pth file there too."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copyfile(PTH_FILE, os.path.join(unpacked_wheel, PTH_FILE))
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
        "numpy>=1.24",
        "scipy",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        # `teachformer export` (ONNX) and its check with onnxruntime
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        "test": ["pytest>=7", "onnx>=1.14", "onnxruntime>=1.16"],
    },
    entry_points={"console_scripts": ["teachformer=nnunet_teachformer.cli:main"]},
    cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth},
)
