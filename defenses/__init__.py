"""Defenses, installed as ``fedbench.defenses``. Each module registers with ``register_defense``."""
