"""Metrics: image similarity, membership-inference metrics, ε lower bounds."""

from fedbench.metrics.base import Metric

__all__ = ["Metric"]
