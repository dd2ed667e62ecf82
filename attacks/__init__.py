"""Attacks, installed as ``fedbench.attacks``. Each module registers with ``register_attack``."""
