"""Omniglot episodes for the numba backend's training loop, their pixel work compiled.

Dimension legend: T tasks (episodes), K shots and Q query drawings per class.

``sample_compiled(family, rng, T, K, Q)`` is ``family.sample(rng, T, K, Q)`` (an
OmniglotTasks, "train" split) with the classes' pick and the episodes' input rows made by
the kernels of fast/episode_kernels.py: the same draws from ``rng`` in the same order, the
same episodes bit for bit (tests/test_episode_kernels.py), about a third of the time.
"""


def sample_compiled(family, rng, T, K, Q):
    """T episodes of K support and Q query drawings per class, as ``family.sample``."""
    from .episode_kernels import LUT, episode_rows, smallest_columns
    return family.sample_with(rng, T, K, Q, (smallest_columns, episode_rows, LUT))
