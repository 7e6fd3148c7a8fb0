"""Variants of ``TeachFormerTrainer``: the paper's ablations, the other student, combinations, short runs.

Each is a subclass that changes class attributes only. ``_tiny`` versions (tiny widths, 2 epochs of 5
iterations, the ``<Teacher>_tiny`` teachers) exist for CPU tests and the quick demo, ``_demo`` ones for
the demo; every student and teacher set of ``roster`` has its ``_tiny``, ``_demo`` and ``_5epochs`` trainer,
so ``teachformer train --preset`` finds one for any choice.
"""
from nnunet_teachformer.networks.uxnet import UXNET_LIGHT_SPEC
from nnunet_teachformer.roster import PAPER_TEACHERS, teacher_trainers
from nnunet_teachformer.trainers.schedules import Demo, FiveEpochs, Tiny
from nnunet_teachformer.trainers.teachformer import TeachFormerTrainer


class TeachFormerTrainer_noAFS(TeachFormerTrainer):
    """Pixel-wise distillation only."""
    afs_weight = 0.0


class TeachFormerTrainer_noPWD(TeachFormerTrainer):
    """Attention-map distillation only."""
    pwd_weight = 0.0


class TeachFormerTrainer_coarseOnly(TeachFormerTrainer):
    afs_taps = ("coarse",)


class TeachFormerTrainer_fineOnly(TeachFormerTrainer):
    afs_taps = ("fine",)


class TeachFormerTrainer_HDenseFormerTeacher(TeachFormerTrainer):
    teacher_trainers = teacher_trainers(("hdenseformer",))


class TeachFormerTrainer_SwinUNETRTeacher(TeachFormerTrainer):
    teacher_trainers = teacher_trainers(("swinunetr",))


class TeachFormerTrainer_UNETRTeacher(TeachFormerTrainer):
    teacher_trainers = teacher_trainers(("unetr",))


class TeachFormerTrainer_UNetTeacher(TeachFormerTrainer):
    """nnU-Net's own U-Net as the only teacher."""
    teacher_trainers = teacher_trainers(("unet",))


class TeachFormerTrainer_fourTeachers(TeachFormerTrainer):
    """The paper's three transformers and nnU-Net's U-Net."""
    teacher_trainers = teacher_trainers(PAPER_TEACHERS + ("unet",))


class TeachFormerTrainer_confidenceWeighted(TeachFormerTrainer):
    """Per voxel, teachers weighted by their probability of the ground-truth class."""
    pwd_combination = "gt_confidence"


class TeachFormerTrainer_entropyWeighted(TeachFormerTrainer):
    """Per voxel, teachers weighted by exp(-entropy): confident teachers count more."""
    pwd_combination = "entropy"


class TeachFormerTrainer_logitMean(TeachFormerTrainer):
    """L_PWD's target: a softmax of the teachers' mean logits instead of the mean of their probabilities."""
    pwd_combination = "logit_mean"


class TeachFormerTrainer_pwdT1(TeachFormerTrainer):
    """L_PWD at temperature 1: the teachers' probabilities as they are, not softened (the paper: T = 3)."""
    pwd_temperature = 1.0


class TeachFormerTrainer_warmup(TeachFormerTrainer):
    """L_SEG alone at first: the distillation weights ramp from 0 over the first quarter of the epochs."""
    distillation_warmup = 0.25


class TeachFormerTrainer_diceWeighted(TeachFormerTrainer):
    """Teachers weighted by their Dice on the inner hold-out, in L_PWD and L_AFS."""
    teacher_weighting = "dice"


class TeachFormerTrainer_dropFailed(TeachFormerTrainer):
    """Teachers far below the best one on the inner hold-out (failed) left out of L_PWD and L_AFS."""
    teacher_weighting = "drop_failed"


class TeachFormerTrainer_diceWeighted_tiny(Tiny, TeachFormerTrainer_diceWeighted):
    pass


class TeachFormerTrainer_dropFailed_tiny(Tiny, TeachFormerTrainer_dropFailed):
    pass


class TeachFormerTrainer_diceWeighted_demo(Demo, TeachFormerTrainer_diceWeighted):
    pass


class TeachFormerTrainer_dropFailed_demo(Demo, TeachFormerTrainer_dropFailed):
    pass


class TeachFormerTrainer_diceWeighted_5epochs(FiveEpochs, TeachFormerTrainer_diceWeighted):
    pass


class TeachFormerTrainer_dropFailed_5epochs(FiveEpochs, TeachFormerTrainer_dropFailed):
    pass


class TeachFormerTrainer_UXNetLightStudent(TeachFormerTrainer):
    network_spec = UXNET_LIGHT_SPEC


class TeachFormerTrainer_5epochs(FiveEpochs, TeachFormerTrainer):
    pass


class TeachFormerTrainer_tiny(Tiny, TeachFormerTrainer):
    pass


class TeachFormerTrainer_noAFS_tiny(Tiny, TeachFormerTrainer_noAFS):
    pass


class TeachFormerTrainer_noPWD_tiny(Tiny, TeachFormerTrainer_noPWD):
    pass


class TeachFormerTrainer_coarseOnly_tiny(Tiny, TeachFormerTrainer_coarseOnly):
    pass


class TeachFormerTrainer_fineOnly_tiny(Tiny, TeachFormerTrainer_fineOnly):
    pass


class TeachFormerTrainer_HDenseFormerTeacher_tiny(Tiny, TeachFormerTrainer_HDenseFormerTeacher):
    pass


class TeachFormerTrainer_SwinUNETRTeacher_tiny(Tiny, TeachFormerTrainer_SwinUNETRTeacher):
    pass


class TeachFormerTrainer_UNETRTeacher_tiny(Tiny, TeachFormerTrainer_UNETRTeacher):
    pass


class TeachFormerTrainer_UNetTeacher_tiny(Tiny, TeachFormerTrainer_UNetTeacher):
    pass


class TeachFormerTrainer_fourTeachers_tiny(Tiny, TeachFormerTrainer_fourTeachers):
    pass


class TeachFormerTrainer_confidenceWeighted_tiny(Tiny, TeachFormerTrainer_confidenceWeighted):
    pass


class TeachFormerTrainer_entropyWeighted_tiny(Tiny, TeachFormerTrainer_entropyWeighted):
    pass


class TeachFormerTrainer_UXNetLightStudent_tiny(Tiny, TeachFormerTrainer_UXNetLightStudent):
    pass


class TeachFormerTrainer_demo(Demo, TeachFormerTrainer):
    pass


class TeachFormerTrainer_UXNetLightStudent_demo(Demo, TeachFormerTrainer_UXNetLightStudent):
    pass


class TeachFormerTrainer_HDenseFormerTeacher_demo(Demo, TeachFormerTrainer_HDenseFormerTeacher):
    pass


class TeachFormerTrainer_SwinUNETRTeacher_demo(Demo, TeachFormerTrainer_SwinUNETRTeacher):
    pass


class TeachFormerTrainer_UNETRTeacher_demo(Demo, TeachFormerTrainer_UNETRTeacher):
    pass


class TeachFormerTrainer_UNetTeacher_demo(Demo, TeachFormerTrainer_UNetTeacher):
    pass


class TeachFormerTrainer_fourTeachers_demo(Demo, TeachFormerTrainer_fourTeachers):
    pass


class TeachFormerTrainer_UXNetLightStudent_5epochs(FiveEpochs, TeachFormerTrainer_UXNetLightStudent):
    pass


class TeachFormerTrainer_HDenseFormerTeacher_5epochs(FiveEpochs, TeachFormerTrainer_HDenseFormerTeacher):
    pass


class TeachFormerTrainer_SwinUNETRTeacher_5epochs(FiveEpochs, TeachFormerTrainer_SwinUNETRTeacher):
    pass


class TeachFormerTrainer_UNETRTeacher_5epochs(FiveEpochs, TeachFormerTrainer_UNETRTeacher):
    pass


class TeachFormerTrainer_UNetTeacher_5epochs(FiveEpochs, TeachFormerTrainer_UNetTeacher):
    pass


class TeachFormerTrainer_fourTeachers_5epochs(FiveEpochs, TeachFormerTrainer_fourTeachers):
    pass
