"""fedbench: benchmark and attack-evaluation suite for privacy-preserving federated learning.

Defenses (``fedbench.defenses``) are paired with attacks (``fedbench.attacks``); the attacker gets
only what the defense leaves visible. See DESIGN.md for the architecture.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
