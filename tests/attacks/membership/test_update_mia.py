"""The server's gradient-alignment attack on client updates and on the model sequence."""

from __future__ import annotations

import torch
from membership_target import Target
from torch.nn import functional as F

from fedbench.attacks.membership.update_mia import gradient_alignment
from fedbench.fl.params import set_flat
from fedbench.metrics.mia import auc
from fedbench.registry import ATTACKS


def test_alignment_is_the_cosine_with_each_examples_gradient(overfit_target: Target) -> None:
    knowledge = overfit_target.knowledge
    params = overfit_target.sim.transcript.model_sequence[3]
    direction = torch.randn(params.numel())
    data = knowledge.candidates
    assert data is not None
    cos = gradient_alignment(knowledge.model_factory(), params, direction, data.subset(range(5)),
                             torch.device("cpu"))
    model = knowledge.model_factory()
    set_flat(model, params)
    for i in range(5):
        model.zero_grad()
        F.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1]).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        expected = F.cosine_similarity(grad, direction, dim=0)
        assert abs(float(cos[i]) - float(expected)) < 1e-5


def test_model_sequence_view_finds_members(overfit_target: Target) -> None:
    view = overfit_target.sim.transcript.model_sequence_view()
    result = ATTACKS.create("update_mia").run(view, overfit_target.knowledge)
    assert result.extras["rounds_used"] == 10
    assert result.scores is not None
    assert auc(result.scores, overfit_target.membership) > 0.55
