"""Integrations: bss orderings inside other people's trainers.

Owns the Lightning callback (``lightning``) and the Hugging Face ``Trainer`` mixin (``hf``), each a
few dozen lines on top of :class:`~bss_cli.scheduling.sampler.ScheduleSampler`, each making every
epoch train on exactly that epoch's schedule rows, in order, in one process or under DDP. May
import ``scheduling`` and the ground floor; the trainer library itself is imported only by its
module (install ``bss[lightning]`` or ``bss[hf]``).
"""
