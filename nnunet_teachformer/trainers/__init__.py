"""nnU-Net trainers of nnunet-teachformer (re-exported for nnU-Net's lookup by nnunet_ext)."""
from nnunet_teachformer.trainers.architectures import *  # noqa: F401,F403
from nnunet_teachformer.trainers.nnunet_unets import (ResEncUNetTrainer, ResEncUNetTrainer_5epochs,  # noqa: F401
                                                      ResEncUNetTrainer_demo, ResEncUNetTrainer_tiny, UNetTrainer,
                                                      UNetTrainer_5epochs, UNetTrainer_demo, UNetTrainer_tiny)
from nnunet_teachformer.trainers.teachformer import TeachFormerTrainer  # noqa: F401
from nnunet_teachformer.trainers.teachformer_variants import *  # noqa: F401,F403
from nnunet_teachformer.trainers.unet_students import *  # noqa: F401,F403
