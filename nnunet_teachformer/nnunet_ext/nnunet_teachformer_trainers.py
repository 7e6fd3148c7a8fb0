"""Shim that nnU-Net's external trainer lookup imports: re-exports every nnunet-teachformer trainer."""
try:
    from nnunet_teachformer.trainers import *  # noqa: F401,F403
except ModuleNotFoundError as e:
    # nnUNet_extTrainer was inherited by a Python environment without this package: find nothing here
    # instead of breaking that environment's trainer lookup.
    if e.name != "nnunet_teachformer":
        raise
