"""Mix-ins for nnU-Net-style short variants: ``class XTrainer_tiny(Tiny, XTrainer): pass``.

They only set class attributes that ``ArchitectureTrainer`` reads, so they combine with any trainer
of this package (the mix-in goes first so its values win).
"""


class Tiny:
    """CPU-test preset used by the tests and the quick demo: tiny width, 2 epochs of 5 iterations, 2 validation
    iterations, and a final validation without mirroring test-time augmentation (8x fewer forwards in 3D; a
    smoke test's Dice needs no TTA, and ``nnUNetv2_predict`` still mirrors); a distilled student learns from
    the ``_tiny`` teachers."""
    network_preset = "tiny"
    teacher_variant = "_tiny"
    epochs = 2
    iterations_per_epoch = 5
    val_iterations_per_epoch = 2
    validation_mirroring = False


class Demo:
    """The demo's preset: tiny widths, 6 epochs of 10 iterations, 2 validation iterations: as much
    training as four models can get in ~10 minutes on 2 CPU cores."""
    network_preset = "tiny"
    teacher_variant = "_demo"
    epochs = 6
    iterations_per_epoch = 10
    val_iterations_per_epoch = 2


class FiveEpochs:
    """nnU-Net's ``_5epochs`` idea: the real network, 5 epochs, for checking a set-up end to end
    (a distilled student learns from the ``_5epochs`` teachers)."""
    epochs = 5
    teacher_variant = "_5epochs"
