"""The study's roster, stated once: which trainers teach, which are students, which variant distils from which
teacher set, and the schedule presets. The study command, the trainers' defaults, the variants, the planner,
the summaries and the report read it from here (tests/test_roster.py checks that every name resolves through
nnU-Net's trainer lookup to the class with the expected network).

Keys of ``TEACHERS`` and ``STUDENTS`` are the names ``teachformer train --teachers/--student`` takes; for this
package's own architectures they are also the keys of ``networks.registry.NETWORKS`` (nnU-Net's U-Nets, built
from the plans, are not there).
"""
TEACHERS = {
    "hdenseformer": "HDenseFormerTrainer",
    "swinunetr": "SwinUNETRTrainer",
    "unetr": "UNETRTrainer",
    "unet": "UNetTrainer",  # nnU-Net's own U-Net (the plans' PlainConvUNet)
    "resenc": "ResEncUNetTrainer",  # nnU-Net's residual-encoder U-Net
}
PAPER_TEACHERS = ("hdenseformer", "swinunetr", "unetr")  # the Teach-Former paper's, in its order
STUDENTS = {  # student -> (baseline trainer without distillation, distilled trainer)
    "hdenseformer_light": ("HDenseFormerLightTrainer", "TeachFormerTrainer"),
    "uxnet_light": ("UXNetLightTrainer", "TeachFormerTrainer_UXNetLightStudent"),
    # nnU-Net's U-Net at 1/2, 1/4, 1/8 of the plans' widths (trainers.unet_students)
    "unet_r2": ("UNetLightR2Trainer", "TeachFormerTrainer_UNetLightR2Student"),
    "unet_r4": ("UNetLightR4Trainer", "TeachFormerTrainer_UNetLightR4Student"),
    "unet_r8": ("UNetLightR8Trainer", "TeachFormerTrainer_UNetLightR8Student"),
}
# teacher sets that have a TeachFormerTrainer variant of their own; any other set runs through TEACHFORMER_TEACHERS
TEACHER_SET_VARIANTS = {
    frozenset(PAPER_TEACHERS): "",
    frozenset(PAPER_TEACHERS + ("unet",)): "_fourTeachers",
    frozenset({"hdenseformer"}): "_HDenseFormerTeacher",
    frozenset({"swinunetr"}): "_SwinUNETRTeacher",
    frozenset({"unetr"}): "_UNETRTeacher",
    frozenset({"unet"}): "_UNetTeacher",
}
NNUNET_BASELINE = "UNetTrainer"  # the row every nnU-Net user compares with
PRESETS = {"full": "", "5epochs": "_5epochs", "demo": "_demo", "tiny": "_tiny"}


def teacher_trainers(keys=PAPER_TEACHERS, suffix: str = ""):
    return tuple(TEACHERS[k] + suffix for k in keys)
