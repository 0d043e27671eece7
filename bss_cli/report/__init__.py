"""Reporting: what artifacts and runs hold (``bss inspect``).

Owns the summaries of every artifact kind (``summary``) and the run plots (``plotting``,
matplotlib optional). Reads files only; may import ``training`` (run-folder names),
``scheduling``, ``scoring``, ``data`` and the ground floor, and needs no torch.
"""
