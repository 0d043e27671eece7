"""Scheduling: from scores to per-epoch orderings.

Owns pacing functions (``pacing``), the schedulers (``schedulers``: curriculum, anti-curriculum,
paced-random, learned, random), the schedule artifact and its pipe formats (``schedule_io``), the
``ScheduleSampler`` that feeds an ordering to a DataLoader (``sampler``) and ``ScheduledRows``, the
same order for data read by row index rather than through a map-style dataset (``streaming``).
May import ``scoring`` (the scores table), ``data`` and the ground floor; only the sampler and
``streaming`` import torch.
"""
