"""Studies: does BSS help on *my* data? Paired seeds, validation-based selection, test once.

Owns the study's design (``design``: variants, seeds, the learning-rate grid, which variant is
which one's random-order control), the runner (``runner``: variants x seeds of ``bss train``,
resumable, locked, several at once) and the statistics (``stats``: per-variant mean and sd, paired
differences to the baseline and to the controls with exact t-intervals and Holm-adjusted p-values,
the weak head's change, the instability signature, the paper's protocol). May import ``training``
(settings, run folders, metrics) and the ground floor; runs go through the ``bss train`` command
in subprocesses.
"""
