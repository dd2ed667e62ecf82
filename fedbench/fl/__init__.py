"""Federated simulation: stages, channel, round pipeline, Transcript."""
