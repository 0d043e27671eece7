"""Compatibility alias: the plug-in contract moved to :mod:`bss_cli.models`.

Kept so that ``--model`` plug-ins written as ``from bss_cli.model import FusionOutput, ModelConfig``
keep working; new code imports from ``bss_cli.models``.
"""

from bss_cli.models.fusion import FusionOutput, LateFusion, ModelConfig  # noqa: F401
