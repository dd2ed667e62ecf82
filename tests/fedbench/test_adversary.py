"""Tests for fedbench.adversary and its place in the config: named, validated before any work,
and invisible in the cell ids of experiments that do not name one."""

from __future__ import annotations

import pytest

from fedbench.adversary import HONEST_BUT_CURIOUS, Adversary, AdversaryRole
from fedbench.config import parse_experiment
from fedbench.errors import ConfigError
from fedbench.fl.channel import PlaintextChannel
from fedbench.fl.threat import ThreatModel
from fedbench.fl.views import ViewKind
from fedbench.harness.suite import cell_id
from fedbench.registry import ADVERSARIES


def test_the_default_adversary_is_honest_and_leaves_cell_ids_alone() -> None:
    cfg = parse_experiment({"name": "e"})
    assert cfg.adversary.name == HONEST_BUT_CURIOUS
    assert "adversary" not in cfg.model_dump(mode="json")
    named = parse_experiment({"name": "e", "adversary": "imprint"})
    assert named.model_dump(mode="json")["adversary"]["name"] == "imprint"
    assert cell_id(named) != cell_id(cfg)


def test_unknown_adversary_and_bad_parameters_fail_before_any_work() -> None:
    with pytest.raises(ConfigError, match=r"unknown adversary 'evil'; allowed: .*imprint"):
        parse_experiment({"adversary": "evil"})
    with pytest.raises(ConfigError, match="bins"):
        parse_experiment({"adversary": {"name": "imprint", "bins": 0}})
    with pytest.raises(ConfigError, match="colour"):
        parse_experiment({"adversary": {"name": "imprint", "colour": "red"}})


def test_registered_adversaries_declare_their_role() -> None:
    # The role is the class's (some adversaries have required parameters, e.g. colluders).
    factories = {name: ADVERSARIES.get(name).factory for name in ADVERSARIES.names()}
    roles = {name: getattr(factory, "role", None) for name, factory in factories.items()}
    assert all(isinstance(role, AdversaryRole) for role in roles.values()), roles
    assert roles[HONEST_BUT_CURIOUS] == AdversaryRole.HONEST_BUT_CURIOUS
    assert roles["imprint"] == AdversaryRole.MALICIOUS_SERVER
    assert roles["colluding_clients"] == AdversaryRole.COLLUDING_CLIENTS
    assert roles["sybil_sampling"] == AdversaryRole.MALICIOUS_SERVER


def test_labels_name_the_settings() -> None:
    assert ADVERSARIES.create(HONEST_BUT_CURIOUS).label() == HONEST_BUT_CURIOUS
    label = ADVERSARIES.create("imprint", {"bins": 16}).label()
    assert label.startswith("imprint(") and "bins=16" in label


class _OpensUpdates(Adversary):
    def views(self, opened: frozenset[ViewKind], *, channel: object) -> frozenset[ViewKind]:
        return opened | {ViewKind.CLIENT_UPDATE}


def test_the_threat_model_asks_the_adversary_which_views_are_open() -> None:
    channel = PlaintextChannel()
    assert ViewKind.CLIENT_UPDATE in ThreatModel(channel=channel).open_views()

    class Hiding(PlaintextChannel):
        reveals_client_updates = False

    hidden = ThreatModel(channel=Hiding())
    assert ViewKind.CLIENT_UPDATE not in hidden.open_views()
    opened = ThreatModel(channel=Hiding(), adversary=_OpensUpdates())
    assert ViewKind.CLIENT_UPDATE in opened.open_views()
