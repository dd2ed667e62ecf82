"""RMIA: pairwise domination scores, the offline approximation, and the attack itself."""

from __future__ import annotations

import numpy as np
import pytest
from membership_target import Target

from fedbench.attacks.membership.rmia import marginal_probability, rmia_scores
from fedbench.metrics.mia import auc
from fedbench.registry import ATTACKS


@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5])
def test_scores_count_dominated_population_samples(gamma: float) -> None:
    rng = np.random.default_rng(0)
    ratio_x = rng.lognormal(size=(30, 2))
    ratio_z = rng.lognormal(size=(50, 2))
    brute = np.mean(
        [[np.mean(ratio_x[i, q] / ratio_z[:, q] >= gamma) for q in range(2)] for i in range(30)],
        axis=1,
    )
    np.testing.assert_allclose(rmia_scores(ratio_x, ratio_z, gamma), brute)


def test_offline_marginal_uses_out_models_and_the_linear_correction() -> None:
    reference = np.array([[[0.9]], [[0.5]], [[0.7]]])  # 3 models, 1 example, 1 query
    in_mask = np.array([[True], [False], [False]])
    offline = marginal_probability(reference, in_mask, online=False, a=0.3)
    assert offline[0, 0] == pytest.approx(0.5 * (1.3 * 0.6 + 0.7))
    online = marginal_probability(reference, in_mask, online=True, a=0.3)
    assert online[0, 0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="OUT"):
        marginal_probability(reference, np.ones((3, 1), bool), online=False, a=0.3)


@pytest.mark.parametrize("params", [{"num_models": 1}, {"num_models": 2},
                                    {"num_models": 2, "online": True}])
def test_rmia_finds_members_with_few_reference_models(
    overfit_target: Target, params: dict[str, object]
) -> None:
    view = overfit_target.sim.transcript.final_model_view()
    result = ATTACKS.create("rmia", params).run(view, overfit_target.knowledge)
    assert result.scores is not None
    assert result.extras["population_samples"] > 100
    assert auc(result.scores, overfit_target.membership) > 0.6


def test_bad_settings_are_refused() -> None:
    for params, message in (
        ({"a": 1.5}, "'a' = 1.5: Input should be less than or equal to 1"),
        ({"gamma": 0}, "gamma"),
        ({"num_models": 3, "online": True}, "even"),
    ):
        with pytest.raises(ValueError, match=message):
            ATTACKS.create("rmia", params)
