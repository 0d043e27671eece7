"""Scoring: per-sample balance scores (method.md, the measurers of the paper's ablation).

Owns the criteria registry and normalisation (``criteria``, pure numpy), predictions files from any
trainer (``predictions``), predictions from a bss model (``predict``: fresh, checkpoint, warm-up)
and the scores table (``scores``: build, write, read). May import ``models``, ``data`` and the
ground floor; scoring from a predictions file imports no torch.
"""
