"""One nnU-Net trainer per architecture, plus its ``_tiny`` (CPU tests), ``_demo`` and ``_5epochs`` variants.

Teachers (H-DenseFormer, SwinUNETR, UNETR, and the full-size 3D UX-Net) are trained with these; the
students (H-DenseFormer Light, 3D UX-Net Light) trained with these are the no-distillation baselines.
"""
from nnunet_teachformer.networks.hdenseformer import HDENSEFORMER_LIGHT_SPEC, HDENSEFORMER_SPEC
from nnunet_teachformer.networks.swin_unetr import SWIN_UNETR_SPEC
from nnunet_teachformer.networks.unetr import UNETR_SPEC
from nnunet_teachformer.networks.uxnet import UXNET_LIGHT_SPEC, UXNET_SPEC
from nnunet_teachformer.trainers.architecture_trainer import ArchitectureTrainer
from nnunet_teachformer.trainers.schedules import Demo, FiveEpochs, Tiny


class HDenseFormerTrainer(ArchitectureTrainer):
    network_spec = HDENSEFORMER_SPEC


class SwinUNETRTrainer(ArchitectureTrainer):
    network_spec = SWIN_UNETR_SPEC


class UNETRTrainer(ArchitectureTrainer):
    network_spec = UNETR_SPEC


class UXNetTrainer(ArchitectureTrainer):
    network_spec = UXNET_SPEC


class HDenseFormerLightTrainer(ArchitectureTrainer):
    network_spec = HDENSEFORMER_LIGHT_SPEC


class UXNetLightTrainer(ArchitectureTrainer):
    network_spec = UXNET_LIGHT_SPEC


class HDenseFormerTrainer_tiny(Tiny, HDenseFormerTrainer):
    pass


class SwinUNETRTrainer_tiny(Tiny, SwinUNETRTrainer):
    pass


class UNETRTrainer_tiny(Tiny, UNETRTrainer):
    pass


class UXNetTrainer_tiny(Tiny, UXNetTrainer):
    pass


class HDenseFormerLightTrainer_tiny(Tiny, HDenseFormerLightTrainer):
    pass


class UXNetLightTrainer_tiny(Tiny, UXNetLightTrainer):
    pass


class HDenseFormerTrainer_5epochs(FiveEpochs, HDenseFormerTrainer):
    pass


class SwinUNETRTrainer_5epochs(FiveEpochs, SwinUNETRTrainer):
    pass


class UNETRTrainer_5epochs(FiveEpochs, UNETRTrainer):
    pass


class UXNetTrainer_5epochs(FiveEpochs, UXNetTrainer):
    pass


class HDenseFormerLightTrainer_5epochs(FiveEpochs, HDenseFormerLightTrainer):
    pass


class UXNetLightTrainer_5epochs(FiveEpochs, UXNetLightTrainer):
    pass


class HDenseFormerTrainer_demo(Demo, HDenseFormerTrainer):
    pass


class SwinUNETRTrainer_demo(Demo, SwinUNETRTrainer):
    pass


class UNETRTrainer_demo(Demo, UNETRTrainer):
    pass


class HDenseFormerLightTrainer_demo(Demo, HDenseFormerLightTrainer):
    pass


class UXNetLightTrainer_demo(Demo, UXNetLightTrainer):
    pass
