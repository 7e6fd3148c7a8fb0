"""One nnU-Net trainer per architecture, plus its ``_tiny`` (CPU tests) and ``_5epochs`` variants.

Teachers (SwinUNETR, UNETR, H-DenseFormer) are trained with these; the students (H-DenseFormer
Light, 3D UX-Net Light) trained with these are the no-distillation baselines.
"""
from nnunet_teachformer.networks.swin_unetr import SWIN_UNETR_SPEC
from nnunet_teachformer.networks.unetr import UNETR_SPEC
from nnunet_teachformer.trainers.architecture_trainer import ArchitectureTrainer
from nnunet_teachformer.trainers.schedules import FiveEpochs, Tiny


class SwinUNETRTrainer(ArchitectureTrainer):
    network_spec = SWIN_UNETR_SPEC


class UNETRTrainer(ArchitectureTrainer):
    network_spec = UNETR_SPEC


class SwinUNETRTrainer_tiny(Tiny, SwinUNETRTrainer):
    pass


class UNETRTrainer_tiny(Tiny, UNETRTrainer):
    pass


class SwinUNETRTrainer_5epochs(FiveEpochs, SwinUNETRTrainer):
    pass


class UNETRTrainer_5epochs(FiveEpochs, UNETRTrainer):
    pass
