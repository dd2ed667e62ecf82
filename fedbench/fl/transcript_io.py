"""Transcripts as files: what a server saw, written by fedbench or by a recorder around another
framework, read back into the in-memory :class:`~fedbench.fl.transcript.Transcript`.

A transcript is a folder of two files:

``transcript.json`` (metadata, format ``fedbench-transcript``, ``version`` 1)
    ``writer`` (who wrote it), ``experiment`` (an experiment configuration without attacks: the
    model by registry name and parameters, the data by name, the public FL settings, the
    defenses and the seed that rebuilds the data), ``channel`` (its name and whether the server
    could read single updates), ``num_params``, ``num_rounds``, ``tensors`` (the tensor file's
    name, size and SHA-256), ``rounds`` (per round: sampled clients, the hash of the model each
    received, contributors, dropped and rejected clients with why, example counts, weights,
    bytes, failure, whether its vectors were kept and which clients' updates the server could
    read), ``model_sequence`` (whether w_0 … w_T are stored) and ``private`` (scoring-only
    ground truth, or null).

``tensors.npz`` (numpy's zip of ``.npy`` arrays, read with ``allow_pickle=False``)
    ``round.<t>.params`` (w_t, the shared model whose hash every client's ``model_hashes`` entry
    must equal), ``round.<t>.aggregate``, ``round.<t>.next_params``, ``round.<t>.client.<c>``
    (only where the channel revealed it), ``model.<t>`` (the model sequence), ``final`` (w_T),
    and ``private.<t>.<c>`` (the example ids behind a client's update, scoring only).

The ``private`` part is what only scoring may read (the attacked examples); the attack views
are cut from everything else, exactly as from the in-memory transcript. :func:`read_transcript`
validates everything and refuses a file naming the file and the field.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from fedbench.errors import ResultsError
from fedbench.fl.channel import AggregateResult, Channel, EncodedUpdate
from fedbench.fl.threat import PrivateLog
from fedbench.fl.transcript import RoundRecord, Transcript, model_hash

FORMAT = "fedbench-transcript"
VERSION = 1
META_FILE = "transcript.json"
TENSOR_FILE = "tensors.npz"


class TranscriptError(ResultsError):
    """A transcript file is missing, foreign, truncated or inconsistent."""


# -- the metadata schema --------------------------------------------------------------------


class _Meta(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class WriterMeta(_Meta):
    """Who wrote the transcript (``fedbench``, ``flower``, ...) and its version."""

    name: str
    version: str


class ChannelMeta(_Meta):
    """The channel the updates travelled through, as far as the server could tell."""

    name: str
    reveals_client_updates: bool


class TensorFileMeta(_Meta):
    """The tensor file, with the size and digest that detect truncation and corruption."""

    file: str
    size: int
    sha256: str


class RoundMeta(_Meta):
    """One round, as the server saw it (ids are client ids; JSON keys are their decimals)."""

    round: int
    sampled: list[int]
    model_hashes: dict[int, str] = {}
    contributors: list[int] = []
    dropped: dict[int, str] = {}
    rejected: dict[int, str] = {}
    upload_bytes: dict[int, int] = {}
    download_bytes: dict[int, int] = {}
    num_examples: dict[int, int] = {}
    weights: dict[int, float] = {}
    failed: str | None = None
    kept: bool = False
    vectors: list[Literal["params", "aggregate", "next_params"]] = []
    client_updates: list[int] | None = None


class PrivateMeta(_Meta):
    """Scoring-only ground truth: which examples were behind each kept client update.

    ``used_ids`` lists ``[round, client]`` pairs stored as ``private.<round>.<client>``;
    ``whole_shards`` says instead that every contributor of a kept round used all its
    examples (a recorder that cannot see the clients' batches, for full-batch FedSGD).
    """

    used_ids: list[tuple[int, int]] = []
    whole_shards: bool = False


class TranscriptMeta(_Meta):
    """``transcript.json``."""

    format: Literal["fedbench-transcript"]
    version: int
    writer: WriterMeta
    experiment: dict[str, Any]
    channel: ChannelMeta
    num_params: int
    num_rounds: int
    tensors: TensorFileMeta
    rounds: list[RoundMeta]
    model_sequence: bool = False
    private: PrivateMeta | None = None


# -- the loaded file ------------------------------------------------------------------------


@dataclass
class TranscriptFile:
    """A transcript with what the file says about its run.

    Attributes:
        transcript: What the server saw (views are cut from it).
        experiment: The run's experiment configuration without attacks (JSON form).
        channel: The channel's name and whether it revealed single updates.
        writer: Who wrote the file.
        private: Scoring-only ground truth, or None when the file holds none.
        whole_shards: The private part says each contributor used all its examples.
        path: The folder it was read from (None when not read from disk).
    """

    transcript: Transcript
    experiment: dict[str, Any]
    channel: ChannelMeta
    writer: WriterMeta
    private: PrivateLog | None = None
    whole_shards: bool = False
    path: Path | None = field(default=None)


class _RecordedChannel(Channel):
    """The channel of a recorded run: it declares what the server could read and replays
    nothing (the messages are not in the file, only what the server made of them)."""

    name: ClassVar[str] = "recorded"

    def encode(self, client_id: int, update: np.ndarray) -> EncodedUpdate:
        raise TranscriptError("a recorded channel carries no messages; it only says what the "
                              "server could read")

    def aggregate(self, messages: Mapping[int, EncodedUpdate]) -> AggregateResult:
        raise TranscriptError("a recorded channel carries no messages; it only says what the "
                              "server could read")


class _RecordedRevealing(_RecordedChannel):
    reveals_client_updates: ClassVar[bool] = True


class _RecordedHiding(_RecordedChannel):
    reveals_client_updates: ClassVar[bool] = False


def recorded_channel(meta: ChannelMeta) -> Channel:
    """A channel that opens the views the recorded channel opened (for the ThreatModel)."""
    return _RecordedRevealing() if meta.reveals_client_updates else _RecordedHiding()


# -- writing --------------------------------------------------------------------------------


def _round_tensors(record: RoundRecord) -> dict[str, np.ndarray]:
    out = {}
    for name in ("params", "aggregate", "next_params"):
        vector = getattr(record, name)
        if vector is not None:
            out[f"round.{record.round}.{name}"] = vector.detach().cpu().numpy()
    for cid, update in (record.client_updates or {}).items():
        out[f"round.{record.round}.client.{cid}"] = update.detach().cpu().numpy()
    return out


def _round_meta(record: RoundRecord) -> dict[str, Any]:
    vectors = [n for n in ("params", "aggregate", "next_params") if getattr(record, n) is not None]
    updates = None if record.client_updates is None else sorted(record.client_updates)
    return RoundMeta(
        round=record.round, sampled=list(record.sampled), model_hashes=record.model_hashes,
        contributors=list(record.contributors), dropped=record.dropped, rejected=record.rejected,
        upload_bytes=record.upload_bytes, download_bytes=record.download_bytes,
        num_examples=record.num_examples, weights=record.weights, failed=record.failed,
        kept=record.params is not None, vectors=vectors, client_updates=updates,
    ).model_dump(mode="json")


def _tensors(transcript: Transcript, private: PrivateLog | None) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for record in transcript.rounds:
        arrays.update(_round_tensors(record))
    for t, params in enumerate(transcript.model_sequence if transcript.keep_model_sequence
                               else []):
        arrays[f"model.{t}"] = params.numpy()
    if transcript.final_params is not None:
        arrays["final"] = transcript.final_params.numpy()
    for (t, cid), ids in (private.used_ids.items() if private else []):
        arrays[f"private.{t}.{cid}"] = ids.detach().cpu().numpy()
    return arrays


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **dict(arrays))  # type: ignore[arg-type]  # numpy types **kwds loosely
    return buffer.getvalue()


def transcript_files(
    transcript: Transcript,
    *,
    experiment: Mapping[str, Any],
    channel: ChannelMeta,
    writer: WriterMeta,
    private: PrivateLog | None = None,
    whole_shards: bool = False,
) -> dict[str, bytes]:
    """The two files of a transcript (name -> bytes), ready to write into a folder.

    Args:
        transcript: What the server saw.
        experiment: The experiment configuration (JSON form); its ``attacks`` are dropped.
        channel: The channel's name and whether the server could read single updates.
        writer: Who writes the file.
        private: Scoring-only ground truth (the example ids behind each kept update).
        whole_shards: Instead of ``private.used_ids``: every contributor used all its examples.
    """
    tensors = _npz_bytes(_tensors(transcript, private))
    final = transcript.final_params
    meta = TranscriptMeta(
        format=FORMAT, version=VERSION, writer=writer,
        experiment={k: v for k, v in experiment.items() if k != "attacks"},
        channel=channel, num_params=0 if final is None else int(final.numel()),
        num_rounds=transcript.num_rounds,
        tensors=TensorFileMeta(file=TENSOR_FILE, size=len(tensors),
                               sha256=hashlib.sha256(tensors).hexdigest()),
        rounds=[RoundMeta.model_validate(_round_meta(r)) for r in transcript.rounds],
        model_sequence=transcript.keep_model_sequence,
        private=None if private is None and not whole_shards else PrivateMeta(
            used_ids=sorted(private.used_ids) if private else [], whole_shards=whole_shards),
    )
    text = json.dumps(meta.model_dump(mode="json"), indent=1, sort_keys=False)
    return {META_FILE: text.encode("utf-8"), TENSOR_FILE: tensors}


def write_transcript(folder: Path, files: Mapping[str, bytes]) -> Path:
    """Write a transcript's files into ``folder`` (tensors first: the metadata, which names
    the tensor file's digest, never points at a file not yet written). Returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TENSOR_FILE).write_bytes(files[TENSOR_FILE])
    (folder / META_FILE).write_bytes(files[META_FILE])
    return folder


# -- reading and validating -----------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def _read_meta(path: Path) -> TranscriptMeta:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TranscriptError(f"{path}: cannot read the transcript metadata ({err})") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise TranscriptError(
            f"{path}: not valid JSON at line {err.lineno} column {err.colno} (truncated?): "
            f"{err.msg}") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise TranscriptError(f"{path}: field 'format' must be {FORMAT!r}; not a transcript")
    if raw.get("version") != VERSION:
        raise TranscriptError(f"{path}: field 'version' is {raw.get('version')!r}; this "
                              f"fedbench reads version {VERSION}")
    try:
        return TranscriptMeta.model_validate(raw)
    except ValidationError as err:
        problems = [f"{path}: field '{_where(p['loc'])}': {p['msg']}" for p in err.errors()]
        raise TranscriptError("\n".join(problems)) from None


def _read_tensors(folder: Path, meta: TranscriptMeta) -> dict[str, np.ndarray]:
    path = folder / meta.tensors.file
    where = f"{folder / META_FILE}: field 'tensors'"
    if Path(meta.tensors.file).name != meta.tensors.file:
        raise TranscriptError(f"{where}.file: {meta.tensors.file!r} must be a file name in "
                              "the transcript folder")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TranscriptError(f"{path}: cannot read the tensor file named in {where}.file "
                              f"({err.strerror})") from err
    if len(data) != meta.tensors.size:
        raise TranscriptError(f"{path}: {len(data)} bytes, but {where}.size says "
                              f"{meta.tensors.size} (truncated or replaced)")
    if hashlib.sha256(data).hexdigest() != meta.tensors.sha256:
        raise TranscriptError(f"{path}: its SHA-256 differs from {where}.sha256 (corrupted "
                              "or replaced)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise TranscriptError(f"{path}: not a readable .npz file ({err})") from err


def _check_vector(
    arrays: Mapping[str, np.ndarray], key: str, dim: int, problems: list[str]
) -> None:
    if key not in arrays:
        problems.append(f"tensor '{key}' is missing")
        return
    array = arrays[key]
    if array.shape != (dim,) or array.dtype.kind != "f":
        problems.append(f"tensor '{key}' has shape {array.shape} and dtype {array.dtype}, "
                        f"expected ({dim},) floats (field 'num_params')")
    elif not np.isfinite(array).all():
        problems.append(f"tensor '{key}' has NaN/Inf entries")


def _round_problems(
    meta: TranscriptMeta, index: int, arrays: Mapping[str, np.ndarray]
) -> list[str]:
    record = meta.rounds[index]
    field_ = f"field 'rounds.{index}"
    problems: list[str] = []
    if record.round != index:
        problems.append(f"{field_}.round' is {record.round}, expected {index} (missing or "
                        "reordered rounds)")
    if not set(record.contributors) <= set(record.sampled):
        problems.append(f"{field_}.contributors' has clients that were not sampled")
    if record.failed is None and set(record.num_examples) != set(record.contributors):
        problems.append(f"{field_}.num_examples' must name exactly the contributors")
    if record.failed is None and set(record.weights) != set(record.contributors):
        problems.append(f"{field_}.weights' must name exactly the contributors")
    if record.kept != ("params" in record.vectors):
        problems.append(f"{field_}.kept' disagrees with {field_}.vectors'")
    if record.kept and record.failed is None and "aggregate" not in record.vectors:
        problems.append(f"{field_}.vectors' lacks the aggregate of a kept round")
    for name in record.vectors:
        _check_vector(arrays, f"round.{index}.{name}", meta.num_params, problems)
    problems += _update_problems(meta, index, arrays)
    problems += _hash_problems(meta, index, arrays)
    return problems


def _update_problems(
    meta: TranscriptMeta, index: int, arrays: Mapping[str, np.ndarray]
) -> list[str]:
    """Single updates only where the channel revealed them, only of contributors."""
    record = meta.rounds[index]
    where = f"field 'rounds.{index}.client_updates'"
    if record.client_updates is None:
        return []
    if not meta.channel.reveals_client_updates:
        return [f"{where}: the channel {meta.channel.name!r} hides single updates "
                "(field 'channel.reveals_client_updates'), yet the file lists some"]
    if not record.kept:
        return [f"{where}: a round whose vectors were not kept lists single updates"]
    problems = []
    if not set(record.client_updates) <= set(record.contributors):
        problems.append(f"{where}: lists clients that did not contribute")
    for cid in record.client_updates:
        _check_vector(arrays, f"round.{index}.client.{cid}", meta.num_params, problems)
    return problems


def _hash_problems(
    meta: TranscriptMeta, index: int, arrays: Mapping[str, np.ndarray]
) -> list[str]:
    """The shared model of a kept round is the one every client's hash names (honest server:
    the model a client received is in the file)."""
    record = meta.rounds[index]
    key = f"round.{index}.params"
    if not record.kept or key not in arrays or arrays[key].shape != (meta.num_params,):
        return []
    shared = model_hash(torch.from_numpy(arrays[key]))
    other = sorted(c for c, h in record.model_hashes.items() if h != shared)
    if other:
        return [f"field 'rounds.{index}.model_hashes': clients {other} received a model other "
                f"than tensor '{key}' (hash {shared}); the file does not hold it"]
    return []


def _file_problems(meta: TranscriptMeta, arrays: Mapping[str, np.ndarray]) -> list[str]:
    problems = []
    if len(meta.rounds) != meta.num_rounds:
        problems.append(f"field 'rounds' has {len(meta.rounds)} rounds, field 'num_rounds' says "
                        f"{meta.num_rounds} (missing rounds)")
    for index in range(len(meta.rounds)):
        problems += _round_problems(meta, index, arrays)
    _check_vector(arrays, "final", meta.num_params, problems)
    if meta.model_sequence:
        for t in range(len(meta.rounds) + 1):
            _check_vector(arrays, f"model.{t}", meta.num_params, problems)
    expected = _expected_keys(meta)
    extra = sorted(set(arrays) - expected)
    if extra:
        problems.append(f"tensors not described by the metadata: {', '.join(extra[:5])}")
    problems += _private_problems(meta, arrays)
    return problems


def _expected_keys(meta: TranscriptMeta) -> set[str]:
    keys = {"final"}
    for r in meta.rounds:
        keys |= {f"round.{r.round}.{name}" for name in r.vectors}
        keys |= {f"round.{r.round}.client.{c}" for c in r.client_updates or []}
    if meta.model_sequence:
        keys |= {f"model.{t}" for t in range(len(meta.rounds) + 1)}
    if meta.private is not None:
        keys |= {f"private.{t}.{c}" for t, c in meta.private.used_ids}
    return keys


def _private_problems(meta: TranscriptMeta, arrays: Mapping[str, np.ndarray]) -> list[str]:
    if meta.private is None:
        return []
    problems = []
    for t, cid in meta.private.used_ids:
        key = f"private.{t}.{cid}"
        if key not in arrays:
            problems.append(f"field 'private.used_ids': tensor '{key}' is missing")
        elif arrays[key].ndim != 1 or arrays[key].dtype.kind not in "iu":
            problems.append(f"tensor '{key}' must be a vector of integer example ids")
    return problems


def _record(meta: RoundMeta, arrays: Mapping[str, np.ndarray]) -> RoundRecord:
    def vector(name: str) -> torch.Tensor | None:
        key = f"round.{meta.round}.{name}"
        return torch.from_numpy(arrays[key].copy()) if name in meta.vectors else None

    updates = None if meta.client_updates is None else {
        c: torch.from_numpy(arrays[f"round.{meta.round}.client.{c}"].copy())
        for c in meta.client_updates
    }
    return RoundRecord(
        round=meta.round, sampled=tuple(meta.sampled), model_hashes=dict(meta.model_hashes),
        contributors=tuple(meta.contributors), dropped=dict(meta.dropped),
        rejected=dict(meta.rejected), upload_bytes=dict(meta.upload_bytes),
        download_bytes=dict(meta.download_bytes), num_examples=dict(meta.num_examples),
        weights=dict(meta.weights), failed=meta.failed, params=vector("params"),
        client_updates=updates, aggregate=vector("aggregate"),
        next_params=vector("next_params"),
    )


def _transcript(meta: TranscriptMeta, arrays: Mapping[str, np.ndarray]) -> Transcript:
    transcript = Transcript(
        rounds=meta.num_rounds, keep_rounds={r.round for r in meta.rounds if r.kept},
        keep_model_sequence=meta.model_sequence,
    )
    transcript.rounds = [_record(r, arrays) for r in meta.rounds]
    if meta.model_sequence:
        transcript.model_sequence = [
            torch.from_numpy(arrays[f"model.{t}"].copy()) for t in range(meta.num_rounds + 1)
        ]
    transcript.final_params = torch.from_numpy(arrays["final"].copy())
    return transcript


def _private(meta: TranscriptMeta, arrays: Mapping[str, np.ndarray]) -> PrivateLog | None:
    if meta.private is None:
        return None
    log = PrivateLog(participants={c for r in meta.rounds if r.failed is None
                                   for c in r.contributors})
    for t, cid in meta.private.used_ids:
        log.used_ids[(t, cid)] = torch.from_numpy(arrays[f"private.{t}.{cid}"].astype(np.int64))
    return log


def read_transcript(folder: str | Path) -> TranscriptFile:
    """Read and validate the transcript in ``folder`` (or its ``transcript.json``).

    Raises:
        TranscriptError: Naming the file and the field: not a transcript, another version,
            truncated or corrupted tensors, wrong shapes, missing rounds, single updates a
            hiding channel could not have revealed, a model hash the file does not hold.
    """
    folder = Path(folder)
    if folder.name == META_FILE:
        folder = folder.parent
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise TranscriptError(f"{folder}: no {META_FILE} (not a transcript folder)")
    meta = _read_meta(meta_path)
    arrays = _read_tensors(folder, meta)
    problems = _file_problems(meta, arrays)
    if problems:
        raise TranscriptError("\n".join(f"{meta_path}: {p}" if p.startswith("field") else
                                        f"{folder / meta.tensors.file}: {p}" for p in problems))
    return TranscriptFile(
        transcript=_transcript(meta, arrays), experiment=meta.experiment, channel=meta.channel,
        writer=meta.writer, private=_private(meta, arrays),
        whole_shards=meta.private is not None and meta.private.whole_shards, path=folder,
    )
