"""Models: the late-fusion network, its encoders, and what runs or stores one.

Owns the model and encoder registry (``fusion``, ``resnet``), device and autocast choice
(``devices``), the optimiser and the one training step shared by the trainer and the scoring
warm-up (``step``), and checkpoint loading (``checkpoints``). Sits below scoring because scoring
runs models; may import ``data`` and the ground floor. Everything here imports torch.

``ModelConfig`` and ``FusionOutput`` are the plug-in contract of ``--model module:function``.
"""

from bss_cli.models.fusion import FusionOutput, ModelConfig

__all__ = ["FusionOutput", "ModelConfig"]
