"""The registered adversaries (:mod:`fedbench.adversary`): an honest-but-curious server, malicious
server strategies, colluding clients. Each module registers its own with
:func:`fedbench.registry.register_adversary`."""
