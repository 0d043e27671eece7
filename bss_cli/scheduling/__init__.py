"""Scheduling: from scores to per-epoch orderings.

Owns pacing functions (``pacing``), the schedulers (``schedulers``: curriculum, anti-curriculum,
learned, random), the schedule artifact and its pipe formats (``schedule_io``) and the
``ScheduleSampler`` that feeds an ordering to a DataLoader (``sampler``). May import ``scoring``
(the scores table), ``data`` and the ground floor; only the sampler imports torch.
"""
