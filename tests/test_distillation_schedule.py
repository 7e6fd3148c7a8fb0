"""The options the distillation-budget ablation added: the teachers' logits averaged before one softmax
(``pwd_combination = "logit_mean"``), and a warm-up that ramps the distillation weights from 0."""
from types import SimpleNamespace

import pytest
import torch

from nnunet_teachformer.distillation.teachers import Teacher, TeacherEnsemble, TeacherRef
from nnunet_teachformer.errors import TeachFormerError
from nnunet_teachformer.networks.unetr import UNETR_SPEC
from nnunet_teachformer.trainers import TeachFormerTrainer
from nnunet_teachformer.trainers.teachformer_variants import TeachFormerTrainer_logitMean, TeachFormerTrainer_warmup


def test_logit_mean_is_a_softmax_of_the_mean_logits_not_the_mean_of_probabilities():
    torch.manual_seed(0)
    patch = (32, 32, 32)
    networks = [UNETR_SPEC.build(2, 3, patch, preset="tiny").eval() for _ in range(2)]
    teachers = [Teacher(TeacherRef(f"T{i}"), None, n) for i, n in enumerate(networks)]
    x = torch.randn(1, 2, *patch)
    temperature = 3.0
    with torch.no_grad():
        logits = [n(x).float() / temperature for n in networks]
    by_logits = TeacherEnsemble(teachers, (), 2.0, temperature, "logit_mean", True)(x).probabilities
    by_probabilities = TeacherEnsemble(teachers, (), 2.0, temperature, "mean", True)(x).probabilities
    assert torch.allclose(by_logits, torch.softmax((logits[0] + logits[1]) / 2, dim=1), atol=1e-6)
    assert torch.allclose(by_logits.sum(1), torch.ones_like(by_logits[:, 0]), atol=1e-5)
    assert not torch.allclose(by_logits, by_probabilities, atol=1e-4)  # a different target, not a renaming
    weighted = TeacherEnsemble(teachers, (), 2.0, temperature, "logit_mean", True, weights=[0.8, 0.2])(x)
    assert torch.allclose(weighted.probabilities, torch.softmax(0.8 * logits[0] + 0.2 * logits[1], dim=1), atol=1e-6)
    alone = TeacherEnsemble(teachers[:1], (), 2.0, temperature, "logit_mean", True)(x).probabilities
    assert torch.allclose(alone, torch.softmax(logits[0], dim=1), atol=1e-6)


@pytest.mark.parametrize("warmup, epochs, ramps", [
    (0.0, 4, [1.0, 1.0, 1.0, 1.0]),  # the paper: distillation from the first step
    (0.5, 4, [0.0, 0.5, 1.0, 1.0]),
    (0.25, 20, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]),
])
def test_warmup_ramps_the_distillation_weights_from_zero(warmup, epochs, ramps):
    ramp = [TeachFormerTrainer.distillation_ramp(SimpleNamespace(distillation_warmup=warmup, num_epochs=epochs,
                                                                 current_epoch=epoch))
            for epoch in range(len(ramps))]
    assert ramp == pytest.approx(ramps)


class _TooLongWarmup(TeachFormerTrainer_warmup):
    distillation_warmup = 1.5


class _Unknown(TeachFormerTrainer_logitMean):
    pwd_combination = "logit_median"


def test_the_new_options_are_checked_when_the_trainer_is_built():
    plans = {"plans_name": "P", "configurations": {}}  # no configuration: the options are checked before it
    with pytest.raises(TeachFormerError, match=r"distillation_warmup = 1.5 \(must be a fraction of the epochs"):
        _TooLongWarmup._check_before_start(plans, "3d_fullres", {})
    with pytest.raises(TeachFormerError, match="pwd_combination = 'logit_median' .*'logit_mean'"):
        _Unknown._check_before_start(plans, "3d_fullres", {})
