"""nnunet-teachformer: Teach-Former multi-teacher distillation as an nnU-Net v2 plugin.

Kept import-free on purpose: ``nnunet_teachformer.pth`` imports ``nnunet_teachformer.nnunet_ext`` at
every interpreter start-up, which imports this file first.
"""
__version__ = "0.1.0"
