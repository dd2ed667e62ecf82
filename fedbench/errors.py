"""Exceptions raised by fedbench. Every message names the offending field, client, file or path."""

from __future__ import annotations


class FedbenchError(Exception):
    """Base class for all fedbench errors."""


class ConfigError(FedbenchError, ValueError):
    """A configuration value, component name or parameter is invalid."""


class DataError(FedbenchError, ValueError):
    """A dataset cannot be loaded or partitioned as asked."""


class BadClientUpdate(FedbenchError, ValueError):
    """One client's update is malformed (wrong shape, NaN/Inf) and must not be aggregated."""

    def __init__(self, client_id: int, reason: str) -> None:
        super().__init__(f"client {client_id}: {reason}")
        self.client_id = client_id
        self.reason = reason


class AggregationError(FedbenchError, RuntimeError):
    """A channel could not produce the aggregate for a round (too many dropouts, tampering...).

    Nothing is returned when this is raised: a partial or wrong sum is never handed on.
    """


class ResultsError(FedbenchError, ValueError):
    """A results folder or record file is missing, foreign or corrupted."""
