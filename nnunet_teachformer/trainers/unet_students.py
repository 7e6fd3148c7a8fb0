"""nnU-Net's own U-Net at 1/2, 1/4 and 1/8 of the plans' widths as light students, beside H-DenseFormer Light and
3D UX-Net Light (keys ``unet_r2``, ``unet_r4``, ``unet_r8`` of ``roster.STUDENTS``).

``PlansUNetStudent`` makes an ``ArchitectureTrainer`` train the plans' U-Net narrowed by its ``network_spec``
(``networks.plans_unet``), with deep supervision as nnU-Net has it (one head per decoder stage, scales from
the plans' strides). The baseline (``UNetLightR4Trainer``) and the distilled student
(``TeachFormerTrainer_UNetLightR4Student``) both put it before our recipe (Adam, focal + Dice, the study's
protocol), so they differ only by distillation. ``UNetTrainer`` (nnU-Net's recipe) stays the row nnU-Net
users compare with.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_teachformer.networks.plans_unet import UNET_R2_SPEC, UNET_R4_SPEC, UNET_R8_SPEC, PlansUNetSpec
from nnunet_teachformer.networks.taps import unwrap_network
from nnunet_teachformer.trainers.architecture_trainer import ArchitectureTrainer
from nnunet_teachformer.trainers.schedules import Demo, FiveEpochs, Tiny
from nnunet_teachformer.trainers.teachformer import TeachFormerTrainer


class PlansUNetStudent:
    """Mix-in placed before ``ArchitectureTrainer`` or ``TeachFormerTrainer``: the plans' U-Net, narrowed."""
    network_spec: PlansUNetSpec

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        return cls.network_spec.build(configuration_manager, num_input_channels, num_output_channels,
                                      preset=cls.network_preset, deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):  # ArchitectureTrainer's are a spec's fixed scales; these, the plans'
        return nnUNetTrainer._get_deep_supervision_scales(self)

    def set_deep_supervision_enabled(self, enabled: bool):
        unwrap_network(self.network).decoder.deep_supervision = enabled


class UNetLightR2Trainer(PlansUNetStudent, ArchitectureTrainer):
    network_spec = UNET_R2_SPEC


class UNetLightR4Trainer(PlansUNetStudent, ArchitectureTrainer):
    network_spec = UNET_R4_SPEC


class UNetLightR8Trainer(PlansUNetStudent, ArchitectureTrainer):
    network_spec = UNET_R8_SPEC


class TeachFormerTrainer_UNetLightR2Student(PlansUNetStudent, TeachFormerTrainer):
    network_spec = UNET_R2_SPEC


class TeachFormerTrainer_UNetLightR4Student(PlansUNetStudent, TeachFormerTrainer):
    network_spec = UNET_R4_SPEC


class TeachFormerTrainer_UNetLightR8Student(PlansUNetStudent, TeachFormerTrainer):
    network_spec = UNET_R8_SPEC


class UNetLightR2Trainer_tiny(Tiny, UNetLightR2Trainer):
    pass


class UNetLightR4Trainer_tiny(Tiny, UNetLightR4Trainer):
    pass


class UNetLightR8Trainer_tiny(Tiny, UNetLightR8Trainer):
    pass


class TeachFormerTrainer_UNetLightR2Student_tiny(Tiny, TeachFormerTrainer_UNetLightR2Student):
    pass


class TeachFormerTrainer_UNetLightR4Student_tiny(Tiny, TeachFormerTrainer_UNetLightR4Student):
    pass


class TeachFormerTrainer_UNetLightR8Student_tiny(Tiny, TeachFormerTrainer_UNetLightR8Student):
    pass


class UNetLightR2Trainer_demo(Demo, UNetLightR2Trainer):
    pass


class UNetLightR4Trainer_demo(Demo, UNetLightR4Trainer):
    pass


class UNetLightR8Trainer_demo(Demo, UNetLightR8Trainer):
    pass


class TeachFormerTrainer_UNetLightR2Student_demo(Demo, TeachFormerTrainer_UNetLightR2Student):
    pass


class TeachFormerTrainer_UNetLightR4Student_demo(Demo, TeachFormerTrainer_UNetLightR4Student):
    pass


class TeachFormerTrainer_UNetLightR8Student_demo(Demo, TeachFormerTrainer_UNetLightR8Student):
    pass


class UNetLightR2Trainer_5epochs(FiveEpochs, UNetLightR2Trainer):
    pass


class UNetLightR4Trainer_5epochs(FiveEpochs, UNetLightR4Trainer):
    pass


class UNetLightR8Trainer_5epochs(FiveEpochs, UNetLightR8Trainer):
    pass


class TeachFormerTrainer_UNetLightR2Student_5epochs(FiveEpochs, TeachFormerTrainer_UNetLightR2Student):
    pass


class TeachFormerTrainer_UNetLightR4Student_5epochs(FiveEpochs, TeachFormerTrainer_UNetLightR4Student):
    pass


class TeachFormerTrainer_UNetLightR8Student_5epochs(FiveEpochs, TeachFormerTrainer_UNetLightR8Student):
    pass
