"""Record what a Flower server saw as a fedbench transcript (``pip install 'fedbench[flower]'``).

:class:`TranscriptRecorder` wraps a Flower strategy (``flwr.server.strategy``, the strategy API
every Flower version of the extra, ``flwr>=1.20,<2``, runs through ``ServerApp(server_fn=...)``
and ``run_simulation``). It passes every call through to the wrapped strategy unchanged, and
records per round: the model each sampled client was sent (its hash; the shared tensor), each
client's update Δ_i = w_i − w_t exactly as the strategy received it, the sum, who took part
and who failed, example counts, and the model the strategy returned. After the last round it
writes the transcript folder, which ``fedbench attack`` reads like one written by
``fedbench run --save-transcripts``.

Under Flower's SecAgg+ (``SecAggPlusWorkflow`` with ``secaggplus_mod`` on the clients) the
strategy receives only the unmasked mean; ``secure_aggregation=True`` records exactly that: the
aggregate, and no single update (the transcript opens no ``client_update`` view).

Wrap the outermost strategy: around Flower's ``DifferentialPrivacyServerSideFixedClipping``
the recorder sees the raw updates (the server does, before it clips and adds noise), around a
strategy whose clients clip (``fixedclipping_mod``, ``LocalDpMod``) the clipped or noised ones.

What the recorder assumes, and the clients must do:

- each client reports its fedbench client id (its shard of the transcript's experiment, e.g.
  ``context.node_config["partition-id"]``) in its fit metrics under :data:`CLIENT_ID`: a
  Flower server knows its clients only by node id;
- parameters travel as the model's ``parameters()`` in order, no buffers (fedbench's flat
  order, ``fedbench.fl.params.get_flat``);
- ``experiment`` describes the run as a fedbench experiment: the model by registry name, the
  data by name (embedded datasets: the attacker's population and the scoring truth are rebuilt
  from it), the FL settings (``fl.weighting`` says how the strategy weighted the updates) and
  the seed that split the data. ``whole_shards=True`` states that every contributor trained
  on all of its shard (full-batch FedSGD), the scoring truth of an update.

Flower's telemetry is switched off (``FLWR_TELEMETRY_ENABLED=0``) unless the environment says
otherwise: an attack evaluation sends nothing anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedbench import __version__
from fedbench.config import ExperimentConfig, parse_experiment
from fedbench.errors import ConfigError
from fedbench.fl.channel import Channel, EncodedUpdate, PlaintextChannel
from fedbench.fl.transcript import RoundRecord, Transcript, model_hash
from fedbench.fl.transcript_io import (
    ChannelMeta,
    TranscriptError,
    WriterMeta,
    recorded_channel,
    transcript_files,
    write_transcript,
)

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # read by flwr at import time

try:
    import flwr
    from flwr.common import (
        EvaluateIns,
        EvaluateRes,
        FitIns,
        FitRes,
        Parameters,
        Scalar,
        parameters_to_ndarrays,
    )
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import Strategy
except ImportError as err:  # the optional extra
    raise ImportError(
        "fedbench.integrations.flower needs Flower: pip install 'fedbench[flower]'"
    ) from err

#: The fit metric in which each client reports its fedbench client id.
CLIENT_ID = "fedbench_client"

#: The fit metric in which a client may report its true example count, when the
#: ``num_examples`` it returns is a weight instead (1 each: Flower's unweighted mean).
EXAMPLES = "fedbench_examples"

FitResults = list[tuple[ClientProxy, FitRes]]
FitFailures = list[tuple[ClientProxy, FitRes] | BaseException]


def flat(parameters: Parameters) -> torch.Tensor:
    """Flower parameters as one flat float32 vector (in the order they travel)."""
    arrays = parameters_to_ndarrays(parameters)
    return torch.from_numpy(np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays]))


def _client_id(proxy: ClientProxy, res: FitRes) -> int:
    value = res.metrics.get(CLIENT_ID)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TranscriptError(
            f"Flower client (node {proxy.cid}) reported no fedbench client id: fit metric "
            f"'{CLIENT_ID}' is {value!r}, expected its shard's index")
    return value


def _examples(res: FitRes) -> int:
    """The client's example count: its :data:`EXAMPLES` metric, else ``num_examples``."""
    value = res.metrics.get(EXAMPLES, res.num_examples)
    return int(value) if isinstance(value, int | float) else int(res.num_examples)


class TranscriptRecorder(Strategy):
    """A Flower strategy that records the transcript of the strategy it wraps.

    Args:
        strategy: The Flower strategy that does the work (e.g. ``FedAvg``, or Flower's DP
            wrappers around it).
        folder: Where the transcript is written after round ``experiment.fl.rounds``.
        experiment: The run as a fedbench experiment (mapping or ExperimentConfig).
        whole_shards: Every contributor trained on its whole shard (the scoring truth).
        secure_aggregation: The strategy runs inside Flower's ``SecAggPlusWorkflow``: every
            result it receives carries the unmasked (example-weighted) mean, so the
            transcript holds only the aggregate and opens no single update.
        channel: The name recorded for the channel (default: ``flower-plaintext``, or
            ``flower-secagg+`` with ``secure_aggregation``).
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        folder: str | Path,
        experiment: Mapping[str, Any] | ExperimentConfig,
        whole_shards: bool = False,
        secure_aggregation: bool = False,
        channel: str | None = None,
    ) -> None:
        self.strategy = strategy
        self.folder = Path(folder)
        self.experiment = (experiment if isinstance(experiment, ExperimentConfig)
                           else parse_experiment(experiment, source="experiment"))
        rounds = self.experiment.fl.rounds
        self.transcript = Transcript(rounds=rounds, keep_rounds=range(rounds),
                                     keep_model_sequence=True)
        self.whole_shards = whole_shards
        self.secure_aggregation = secure_aggregation
        self.channel = channel or ("flower-secagg+" if secure_aggregation else "flower-plaintext")
        # What the strategy can read of one result: all of it, or (SecAgg+) nothing of its own.
        self._channel: Channel = (
            recorded_channel(ChannelMeta(name=self.channel, reveals_client_updates=False))
            if secure_aggregation else PlaintextChannel())
        self._sent: dict[str, str] = {}
        self._w_t: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"TranscriptRecorder({self.strategy!r})"

    # -- passed through ------------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        # Annotated locals: without flwr installed (mypy in CI) the wrapped calls are Any.
        instructions: list[tuple[ClientProxy, EvaluateIns]] = self.strategy.configure_evaluate(
            server_round, parameters, client_manager)
        return instructions

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        loss: tuple[float | None, dict[str, Scalar]] = self.strategy.aggregate_evaluate(
            server_round, results, failures)
        return loss

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        evaluated: tuple[float, dict[str, Scalar]] | None = self.strategy.evaluate(
            server_round, parameters)
        return evaluated

    # -- recorded ------------------------------------------------------------------------

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """The wrapped strategy's instructions; records w_t and the hash each client gets."""
        self._w_t = flat(parameters)
        if not self.transcript.model_sequence:
            self.transcript.record_params(self._w_t)  # w_0
        instructions: list[tuple[ClientProxy, FitIns]] = self.strategy.configure_fit(
            server_round, parameters, client_manager)
        self._sent = {proxy.cid: model_hash(flat(ins.parameters))
                      for proxy, ins in instructions}
        return instructions

    def aggregate_fit(
        self, server_round: int, results: FitResults, failures: FitFailures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """The wrapped strategy's aggregate; records what it received and returned."""
        if self._w_t is None:
            raise TranscriptError(f"round {server_round}: aggregate_fit before configure_fit")
        # What the strategy received, read before it runs (a DP wrapper clips in place).
        received = [(proxy, _client_id(proxy, res), flat(res.parameters), res)
                    for proxy, res in results]
        parameters, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        self._record(server_round - 1, received, failures, parameters)
        if server_round == self.transcript.num_rounds:
            self.save()
        return parameters, metrics

    def _weights(self, received: list[tuple[Any, int, torch.Tensor, FitRes]]) -> dict[int, float]:
        """fedbench's public aggregation weights: size / mean size, or 1 (``fl.weighting``)."""
        if self.experiment.fl.weighting != "weighted":
            return {cid: 1.0 for _, cid, _, _ in received}
        mean = float(np.mean([res.num_examples for *_, res in received]))
        return {cid: res.num_examples / mean for _, cid, _, res in received}

    def _record(
        self, index: int, received: list[tuple[ClientProxy, int, torch.Tensor, FitRes]],
        failures: FitFailures, parameters: Parameters | None,
    ) -> None:
        """Hand the round to the Transcript, which keeps what a plaintext server reads."""
        assert self._w_t is not None
        w_t = self._w_t
        weights = self._weights(received) if received else {}
        messages = {} if self.secure_aggregation else self._messages(received, w_t, weights)
        dropped = self._failed_clients(failures)
        contributors = tuple(cid for _, cid, _, _ in received)
        failed = None if parameters is not None and received else "no client update arrived"
        record = RoundRecord(
            round=index, sampled=tuple(sorted({*contributors, *dropped})),
            model_hashes={cid: self._sent[proxy.cid] for proxy, cid, _, _ in received
                          if proxy.cid in self._sent},
            contributors=contributors if failed is None else (), dropped=dropped,
            upload_bytes={cid: sum(len(t) for t in res.parameters.tensors)
                          for _, cid, _, res in received},
            num_examples={cid: _examples(res) for _, cid, _, res in received},
            weights=weights, failed=failed, params=w_t,
        )
        if failed is None:
            assert parameters is not None
            record.aggregate = self._sum(received, messages, w_t, weights)
            record.next_params = flat(parameters)
        self.transcript.add_round(record, channel=self._channel,
                                  messages=messages if failed is None else None)
        self.transcript.record_params(w_t if record.next_params is None else record.next_params)

    @staticmethod
    def _messages(
        received: list[tuple[ClientProxy, int, torch.Tensor, FitRes]], w_t: torch.Tensor,
        weights: dict[int, float],
    ) -> dict[int, EncodedUpdate]:
        """Each weighted update Δ_i·weight_i, as fedbench's plaintext channel carries it."""
        messages = {}
        for _, cid, w_i, _ in received:
            update = ((w_i - w_t) * weights[cid]).numpy()
            messages[cid] = EncodedUpdate(cid, update, int(update.nbytes))
        return messages

    def _sum(
        self, received: list[tuple[ClientProxy, int, torch.Tensor, FitRes]],
        messages: dict[int, EncodedUpdate], w_t: torch.Tensor, weights: dict[int, float],
    ) -> torch.Tensor:
        """S = Σ_i weight_i·Δ_i. Under SecAgg+ every result holds the unmasked mean w̄ (weighted
        by example counts, as the weights are), so S = Σ_i weight_i · (w̄ − w_t)."""
        if not self.secure_aggregation:
            total = np.sum([m.payload for m in messages.values()], axis=0, dtype=np.float64)
            return torch.from_numpy(total)
        mean = received[0][2]
        return (mean - w_t).to(torch.float64) * float(sum(weights.values()))

    @staticmethod
    def _failed_clients(failures: FitFailures) -> dict[int, str]:
        """Failed clients that said who they are (an exception names no client)."""
        dropped = {}
        for failure in failures:
            if isinstance(failure, BaseException):
                continue
            _, res = failure
            value = res.metrics.get(CLIENT_ID)
            if isinstance(value, int) and not isinstance(value, bool):
                dropped[value] = f"flower: {res.status.code.name} {res.status.message}".strip()
        return dropped

    def save(self) -> Path:
        """Write the transcript so far into ``folder`` (done after the last round)."""
        if self.transcript.final_params is None:
            raise ConfigError("nothing to save: no round was configured")
        files = transcript_files(
            self.transcript, experiment=self.experiment.model_dump(mode="json"),
            channel=ChannelMeta(name=self.channel,
                                reveals_client_updates=not self.secure_aggregation),
            writer=WriterMeta(name="flower", version=f"flwr {flwr.__version__}, fedbench "
                                                      f"{__version__} TranscriptRecorder"),
            whole_shards=self.whole_shards,
        )
        return write_transcript(self.folder, files)
