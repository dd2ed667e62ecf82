"""iDLG: exact labels at batch 1, label counts for batches, then DLG on the image alone."""

from __future__ import annotations

import pytest
import torch

from fedbench.attacks.gradient_inversion.idlg import IDLG, count_labels, recover_labels
from fedbench.attacks.gradient_inversion.objective import FunctionalModel
from fedbench.attacks.gradient_inversion.scoring import label_accuracy
from fedbench.attacks.gradient_inversion.views import inversion_target
from fedbench.data.tensors import TensorData

from .helpers import factory, fedsgd, knowledge, run_experiment, sgd_update_view

SHAPE = (3, 32, 32)


def recovered(build, patches: TensorData, index: torch.Tensor) -> torch.Tensor:
    x, y = patches.x[index], patches.y[index]
    view = sgd_update_view(build, x, y, lr=0.1)
    know = knowledge(build, fedsgd(len(x)), patches.subset(torch.arange(1000, 1256)),
                     input_shape=SHAPE)
    target = inversion_target(view, know.recipe)
    model = FunctionalModel(build(), target.params, know.device)
    labels, _ = recover_labels(target, model, know)
    return labels


def test_idlg_labels_are_exact_at_batch_one(patches: TensorData) -> None:
    generator = torch.Generator().manual_seed(0)
    hits = 0
    for seed in range(3):  # three initialisations × ten images, every class represented
        build = factory("lenet", SHAPE, seed=seed)
        for cls in range(10):
            pool = torch.nonzero(patches.y == cls).flatten()
            index = pool[torch.randint(len(pool), (1,), generator=generator)]
            hits += int(recovered(build, patches, index).item() == cls)
    assert hits == 30


def test_label_counts_of_a_batch(patches: TensorData) -> None:
    # Batches of 8 with repeated classes on lenet at initialisation.
    generator = torch.Generator().manual_seed(1)
    accuracies = []
    for seed in range(5):
        index = torch.randint(len(patches), (8,), generator=generator)
        labels = recovered(factory("lenet", SHAPE, seed=seed), patches, index)
        assert len(labels) == 8
        accuracies.append(label_accuracy(labels, patches.y[index]))
    assert min(accuracies) >= 0.75 and sum(accuracies) / 5 >= 0.9, accuracies


def test_count_labels_keeps_every_class_with_a_negative_gradient() -> None:
    signal = torch.tensor([-0.3, 0.1, -0.05, 0.1, 0.15])
    labels = count_labels(signal, 4, torch.full((5,), 0.2))
    assert {0, 2} <= set(labels.tolist()) and len(labels) == 4
    with pytest.raises(ValueError, match="num_images"):
        count_labels(signal, 0, torch.full((5,), 0.2))


def test_idlg_reconstructs_one_image() -> None:
    metrics, _ = run_experiment({
        "data": "image_patches", "model": "lenet", "seed": 0,
        "fl": {"algorithm": "fedsgd", "batch_size": 1, "num_clients": 10, "rounds": 1,
               "clients_per_round": 1},
        "attacks": [{"name": "idlg", "iterations": 150}],
    })
    assert metrics["label_accuracy"].value == 1.0
    assert metrics["psnr"].value >= 25.0
    assert metrics["psnr"].view == "client_update"
    # Other images and the failure rate: test_dlg.py::test_dlg_is_reliable_across_images.


def test_idlg_fixes_the_recovered_labels(patches: TensorData) -> None:
    build = factory("lenet", SHAPE, seed=0)
    x, y = patches.x[5:6], patches.y[5:6]
    view = sgd_update_view(build, x, y, lr=0.1)
    result = IDLG(iterations=2).run(view, knowledge(build, fedsgd(1), patches, input_shape=SHAPE))
    assert result.labels.tolist() == y.tolist()
    assert "iDLG" in result.extras["labels"]
