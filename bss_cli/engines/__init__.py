"""Engines that run bss stages past one machine (imported only when asked for).

Owns the Ray Data paths of ``bss score`` and ``bss schedule``. May import scheduling, scoring, data
and the ground floor, never training or the CLI; each engine's own library is imported inside its
functions, so ``import bss_cli`` never needs it.
"""
