"""Training: ``bss train`` end to end.

Owns the run settings (``config``), the per-epoch plan that turns scores into the epoch's order
(``planner``), the trainer loop with evaluation, checkpoints and exact resume (``trainer``), run
folders and their files (``runs``), validation metrics (``metrics``) and process-group set-up under
torchrun (``distributed``). May import ``scheduling``, ``scoring``, ``models``, ``data`` and the
ground floor.
"""
