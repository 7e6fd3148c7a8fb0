"""nnU-Net's progress logger, extended with the three Teach-Former loss terms.

nnU-Net's ``LocalLogger`` keeps one value per epoch per key and draws ``progress.png``. The
distillation trainer logs L_SEG, L_AFS and L_PWD too; this logger accepts those keys and draws them
in their own panel of ``progress.png``, below nnU-Net's usual loss / pseudo-Dice panel, epoch time and
learning rate.
"""
from typing import Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import join  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402


class DistillationProgressLogger(LocalLogger):
    def __init__(self, loss_terms: Sequence[str], verbose: bool = False):
        super().__init__(verbose)
        self.loss_terms = tuple(loss_terms)
        for key in self.loss_terms:
            self.my_fantastic_logging[key] = []

    def plot_progress_png(self, output_folder):
        log = self.my_fantastic_logging
        epochs = min(len(v) for v in log.values())
        x = list(range(epochs))
        fig, axes = plt.subplots(4, 1, figsize=(12, 20))

        ax = axes[0]
        ax.plot(x, log["train_losses"][:epochs], "b-", label="loss_tr (total)")
        ax.plot(x, log["val_losses"][:epochs], "r-", label="loss_val (L_SEG)")
        ax.set_ylabel("loss")
        dice = ax.twinx()
        dice.plot(x, log["mean_fg_dice"][:epochs], "g:", label="pseudo dice")
        dice.plot(x, log["ema_fg_dice"][:epochs], "g-", label="pseudo dice (mov. avg.)")
        dice.set_ylabel("pseudo dice")
        ax.legend(loc="upper left")
        dice.legend(loc="upper right")

        ax = axes[1]
        for key in self.loss_terms:
            ax.plot(x, log[key][:epochs], label=key)
        ax.set_ylabel("training loss terms")
        ax.legend(loc="upper right")

        axes[2].plot(x, [e - s for e, s in zip(log["epoch_end_timestamps"][:epochs],
                                               log["epoch_start_timestamps"][:epochs])], "b-", label="epoch duration")
        axes[2].set_ylabel("time [s]")
        axes[2].set_ylim(bottom=0)
        axes[3].plot(x, log["lrs"][:epochs], "b-", label="learning rate")
        axes[3].set_ylabel("learning rate")
        for ax in axes:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(join(output_folder, "progress.png"))
        plt.close(fig)
