"""nnU-Net's own U-Nets in the study: the baseline to beat, and teachers like any other.

``UNetTrainer`` trains the plans' own architecture (``PlainConvUNet``) with nnU-Net's own recipe (SGD,
Dice + cross-entropy, deep supervision, its augmentation); ``ResEncUNetTrainer`` trains nnU-Net's
residual-encoder U-Net (``ResidualEncoderUNet``, the 2024 ResEnc presets) on the same plans' stages,
widths and kernels. Both run under the study's protocol (``StudyProtocol``: inner hold-out selection,
early stopping, provenance record), so they are compared with, and teach, our networks on equal terms.
The distillation taps of these networks are found automatically (``networks.taps.distillation_taps_of``).

The stock ``nnUNetTrainer`` (and any of its variants, on any plans) teaches too, as the user trained it
(``teachformer distill --from nnUNetTrainer``): it keeps no provenance record, so what it trained on is
derived from nnU-Net's ``splits_final.json`` (``distillation.teachers.derived_record``).
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_teachformer.networks.plans_unet import TINY_WIDTH_DIVISOR, narrowed
from nnunet_teachformer.trainers.protocol import StudyProtocol
from nnunet_teachformer.trainers.schedules import Demo, FiveEpochs, Tiny

RESENC_CLASS = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
# residual blocks per encoder stage of nnU-Net's ResEnc planners (nnUNetPlannerResEncM/L/XL); one conv per decoder stage
RESENC_BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)


class UNetTrainer(StudyProtocol, nnUNetTrainer):
    network_preset = "paper"  # "paper": the plans' widths; "tiny": 1/TINY_WIDTH_DIVISOR of them

    @classmethod
    def architecture(cls, class_name: str, kwargs: dict):
        """The (network class, keyword arguments) this trainer builds from the plans' architecture entry."""
        if cls.network_preset == "tiny":
            kwargs = dict(kwargs, features_per_stage=narrowed(kwargs["features_per_stage"], TINY_WIDTH_DIVISOR))
        return class_name, kwargs

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        class_name, kwargs = cls.architecture(configuration_manager.network_arch_class_name,
                                              dict(configuration_manager.network_arch_init_kwargs))
        return get_network_from_plans(class_name, kwargs, configuration_manager.network_arch_init_kwargs_req_import,
                                      num_input_channels, num_output_channels, allow_init=True,
                                      deep_supervision=enable_deep_supervision)


class ResEncUNetTrainer(UNetTrainer):
    @classmethod
    def architecture(cls, class_name: str, kwargs: dict):
        class_name, kwargs = super().architecture(class_name, kwargs)
        stages = kwargs["n_stages"]
        kwargs = {k: v for k, v in kwargs.items() if k != "n_conv_per_stage"}
        kwargs.update(n_blocks_per_stage=list(RESENC_BLOCKS_PER_STAGE[:stages]),
                      n_conv_per_stage_decoder=[1] * (stages - 1))
        return RESENC_CLASS, kwargs


class UNetTrainer_tiny(Tiny, UNetTrainer):
    pass


class ResEncUNetTrainer_tiny(Tiny, ResEncUNetTrainer):
    pass


class UNetTrainer_demo(Demo, UNetTrainer):
    pass


class ResEncUNetTrainer_demo(Demo, ResEncUNetTrainer):
    pass


class UNetTrainer_5epochs(FiveEpochs, UNetTrainer):
    pass


class ResEncUNetTrainer_5epochs(FiveEpochs, ResEncUNetTrainer):
    pass
