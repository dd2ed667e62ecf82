"""The secagg channel against a malicious server: the check options, a deviating server
through ``set_adversary``, and per-client model hashes through the round's notes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedbench.defenses.secagg.adversary import SplitViewServer
from fedbench.defenses.secagg.channel import (
    MODEL_HASHES_NOTE,
    SecAgg,
    SecAggChannel,
    SecAggProtocol,
)
from fedbench.defenses.secagg.protocol import ConsistencyError, Stage
from fedbench.errors import AggregationError, ConfigError
from fedbench.fl.context import RunInfo
from fedbench.registry import DEFENSES

from .test_channel import make_ctx, make_run, random_updates


def round_with(
    channel: SecAggChannel, run: RunInfo, updates: dict[int, np.ndarray],
    hashes: dict[int, str] | None = None,
) -> Any:
    ctx = make_ctx(run, 0, sorted(updates))
    if hashes is not None:
        ctx.notes[MODEL_HASHES_NOTE] = hashes
    channel.begin_round(ctx)
    messages = {c: channel.encode(c, u) for c, u in updates.items()}
    return channel.aggregate(messages)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"consistency_check": 1}, "consistency_check"),
        ({"model_consistency": "yes"}, "model_consistency"),
        ({"dropout_stage": "consistency_check"}, "needs consistency_check: true"),
    ],
)
def test_bad_check_options_are_refused_naming_the_field(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DEFENSES.create("secagg", params)


def test_checks_are_off_by_default_and_a_malicious_adversary_turns_the_check_on() -> None:
    channel = SecAgg().channel
    assert not channel.protocol.consistency_check and not channel.protocol.model_consistency
    channel.expect_malicious_server()
    assert channel.protocol.consistency_check
    # A config that says no keeps no (e.g. to show the deviation works without it).
    refused = SecAgg(consistency_check=False).channel
    refused.expect_malicious_server()
    assert not refused.protocol.consistency_check
    group = SecAggProtocol.model_validate({"consistency_check": False})
    assert not group.for_malicious_server().consistency_check


def test_with_the_checks_the_round_decodes_the_same_sum_and_counts_their_bytes() -> None:
    run = make_run()
    updates = random_updates(list(range(10)), dim=30)
    hashes = dict.fromkeys(updates, "0123456789abcdef")
    plain = round_with(SecAgg().channel, run, updates)
    checked = round_with(SecAgg(consistency_check=True, model_consistency=True).channel, run,
                         updates, hashes)
    np.testing.assert_array_equal(checked.total, plain.total)
    assert checked.stats["consistency_check_bytes"] > 0
    assert checked.stats["model_consistency_bytes"] == 10 * 10 * 8  # 8-byte hash, 10 × seen
    assert "consistency_check_bytes" not in plain.stats
    for c in updates:
        assert checked.upload_bytes[c] > plain.upload_bytes[c]


def test_model_consistency_aborts_on_a_differing_hash_naming_the_clients() -> None:
    run = make_run()
    updates = random_updates(list(range(10)), dim=30)
    hashes = {**dict.fromkeys(updates, "0123456789abcdef"), 6: "fedcba9876543210"}
    channel = SecAgg(model_consistency=True).channel
    with pytest.raises(ConsistencyError, match=r"round 0: client 0 received the model .* "
                                               r"neighbours \[6\] received different models"):
        round_with(channel, run, updates, hashes)


def test_model_consistency_without_hashes_fails_the_round_saying_where_they_go() -> None:
    channel = SecAgg(model_consistency=True).channel
    with pytest.raises(AggregationError, match=r"ctx.notes\['model_hashes'\]; clients \[0, 1"):
        round_with(channel, make_run(), random_updates(list(range(10)), dim=30))


def _deviating(channel: SecAggChannel) -> SecAggChannel:
    # t = 5 of 9 holders: the server needs one colluding neighbour to get 5 of each share.
    channel.set_adversary(lambda ctx: SplitViewServer(target=0), colluders={9})
    return channel


def test_a_deviating_server_unmasks_the_targets_update_without_the_check() -> None:
    run = make_run()
    updates = random_updates(list(range(10)), dim=30)
    channel = _deviating(SecAgg(consistency_check=False).channel)
    result = round_with(channel, run, updates)
    recovered = channel.recovered_updates(0)
    # Exactly what client 0 encoded (clipped and stochastically rounded), decoded.
    rng = run.streams.numpy("secagg.rounding", 0, 0)
    expected = channel.encoder.decode(channel.encoder.encode(updates[0], rng), 1)
    np.testing.assert_array_equal(recovered[0], expected)
    assert result.contributors == tuple(range(10))  # and the round looked normal


def test_with_the_check_the_deviating_server_fails_the_round_and_recovers_nothing() -> None:
    channel = _deviating(SecAgg().channel)
    channel.expect_malicious_server()
    with pytest.raises(ConsistencyError, match="round 0: the consistency check failed"):
        round_with(channel, make_run(), random_updates(list(range(10)), dim=30))
    assert channel.recovered_updates(0) == {}


def test_the_check_needs_its_quorum_after_tolerated_dropouts() -> None:
    channel = SecAgg(consistency_check=True, tolerated_dropout=0.4,
                     tolerated_corruption=0.4, threshold=0.55).channel
    problems = channel.check(make_run())
    assert any("consistency_check with 10 clients per round needs 8 signatures" in p
               for p in problems)


def test_random_dropout_stages_include_the_check_only_when_it_runs() -> None:
    off = SecAggProtocol(dropout_stage="random")
    on = SecAggProtocol(dropout_stage="random", consistency_check=True)
    assert Stage.CONSISTENCY_CHECK not in off.stages
    assert on.stages == list(Stage)


def test_a_client_dropping_at_the_check_keeps_its_input_in_the_sum() -> None:
    run = make_run()
    updates = random_updates(list(range(10)), dim=30)
    channel = SecAgg(consistency_check=True, dropout=0.1,
                     dropout_stage="consistency_check").channel
    result = round_with(channel, run, updates)
    [(client, why)] = result.dropped.items()
    assert why == "dropped at consistency_check (input included in the sum)"
    assert client in result.contributors


def test_the_protocol_group_dumps_the_checks_only_when_a_config_set_them() -> None:
    """distributed_dp's cells written before the checks existed keep their ids, and an explicit
    false survives the round trip (so a malicious adversary does not turn it on)."""
    before = {"neighbours": "full", "threshold": None, "dropout": 0.0,
              "dropout_stage": "masked_input", "tolerated_dropout": 0.1,
              "tolerated_corruption": 0.1}
    assert SecAggProtocol().model_dump(mode="json") == before
    explicit = SecAggProtocol.model_validate({"consistency_check": False})
    again = SecAggProtocol.model_validate(explicit.model_dump(mode="json"))
    assert again.for_malicious_server().consistency_check is False
    assert DEFENSES.validate("distributed_dp", {})["secagg"] == before
