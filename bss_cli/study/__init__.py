"""Studies: does BSS help on *my* data? Paired seeds, validation-based selection, test once.

Owns the study runner (``runner``: variants x seeds of ``bss train``, resumable, several at once)
and its statistics (``stats``: per-variant mean and sd, paired differences to the baseline with
95 % t-intervals, wins/losses/ties, the weak head's change). May import ``training`` (settings
and run folders) and the ground floor; runs go through the ``bss train`` command in subprocesses.
"""
