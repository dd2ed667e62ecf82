"""The default adversary: a server that follows the protocol and reads what it is sent."""

from __future__ import annotations

from fedbench.adversary import HONEST_BUT_CURIOUS, Adversary
from fedbench.registry import register_adversary


@register_adversary(HONEST_BUT_CURIOUS)
class HonestButCurious(Adversary):
    """An honest-but-curious server: follows the protocol, attacks the views it is left."""
