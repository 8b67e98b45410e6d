"""Omniglot episodes in compiled code: the classes' pick and the episode's input rows.

Dimension legend: T tasks (episodes), N ways, K shots and Q query drawings per class,
C characters of a split, R = 20 drawings per character, S = 28 pixels a side, D = S·S.

For the numba backend's training loop (``mamlnp.fast.episodes.sample_compiled``, called by
mamlnp.run.trainstep.sample_batch): the same draws from the run's generator as
``OmniglotTasks.sample``, made in NumPy by the caller; these kernels only replace the NumPy
work done on them (~1 ms per 5-way 1-shot meta-batch of 32: a partial sort, fancy
indexing, boolean-mask rotations and a division).

Twins (tests/test_episode_kernels.py checks each bit for bit, not to a tolerance):
  * ``smallest_columns`` = mamlnp.tasks.omniglot._smallest (= ``argsort(u)[:, :n]``): per
    row of u (T, C), the columns of its n smallest entries in increasing order of value,
    by insertion into a sorted list of n (O(C·n), n = N ≤ C). For distinct entries, as
    random doubles are, the answer is unique (ties, which NumPy's partition leaves in no
    documented order, go here to the lower column);
  * ``episode_rows`` = the rest of ``OmniglotTasks._episodes``: the drawing ink[c, r]
    (S, S) uint8 of each class, turned counter-clockwise by k quarter turns as
    ``np.rot90(·, k)`` (``rotated_row``), divided by 255.0 through ``LUT`` =
    np.arange(256) / 255.0 (the quotients ``np.divide(u8, 255.0)`` makes: uint8 → float64,
    one IEEE division), into row n·K + j of xs (j < K) or n·Q + j − K of xq.
"""
import numpy as np
from numba import njit

from . import common  # noqa: F401  (first: drops stale compiled code)

LUT = np.arange(256, dtype=np.uint8) / 255.0       # (256,) ink u -> u / 255.0, NumPy's bits
LUT.setflags(write=False)


@njit(cache=True, _nrt=False)
def smallest_columns(u, out):
    """out (T, n) int64 ← per row t of u (T, C), the columns of its n smallest entries,
    smallest first: a sorted insertion list of n (value, column) pairs per row."""
    T, C, n = u.shape[0], u.shape[1], out.shape[1]
    for t in range(T):
        row, cols = u[t], out[t]
        filled = 0
        for c in range(C):
            x = row[c]
            if filled == n and not x < row[cols[n - 1]]:
                continue                                  # not among the n smallest so far
            j = filled if filled < n else n - 1           # the slot freed at the end
            while j > 0 and x < row[cols[j - 1]]:
                cols[j] = cols[j - 1]
                j -= 1
            cols[j] = c
            filled = min(filled + 1, n)


@njit(cache=True, _nrt=False)
def rotated_row(img, k, lut, row):
    """row (S·S,) ← lut[rot90(img, k)] row-major, img (S, S) uint8, k in 0 … 3; one loop
    per k: rot90(img, 1)[a, b] = img[b, S−1−a], 2: img[S−1−a, S−1−b], 3: img[S−1−b, a]."""
    S = img.shape[0]
    S1 = S - 1
    for a in range(S):
        out = row[a * S:(a + 1) * S]
        if k == 0:
            for b in range(S):
                out[b] = lut[img[a, b]]
        elif k == 1:
            for b in range(S):
                out[b] = lut[img[b, S1 - a]]
        elif k == 2:
            for b in range(S):
                out[b] = lut[img[S1 - a, S1 - b]]
        else:
            for b in range(S):
                out[b] = lut[img[S1 - b, a]]


@njit(cache=True, _nrt=False)
def episode_rows(ink, chars, draws, turns, lut, xs, xq):
    """The episodes' inputs: ink (·, R, S, S) uint8, chars (T, N) rows of ink, draws
    (T, N, K+Q) drawings, turns (T, N) quarter turns, lut (256,) = arange(256) / 255.0;
    xs (T, N·K, D), xq (T, N·Q, D) float64 ← lut[rot90(ink[chars[t, n], draws[t, n, j]],
    turns[t, n])], the first K drawings of class n into xs[t, n·K + j], the other Q into
    xq[t, n·Q + j − K]. (The table holds the 256 quotients u / 255.0 NumPy's division
    gives; a look-up per pixel instead of a division, which does not vectorise here.)"""
    T, N, KQ = draws.shape[0], draws.shape[1], draws.shape[2]
    K = xs.shape[1] // N
    Q = KQ - K
    for t in range(T):
        for n in range(N):
            k = turns[t, n] % 4
            for j in range(KQ):
                row = xs[t, n * K + j] if j < K else xq[t, n * Q + j - K]
                rotated_row(ink[chars[t, n], draws[t, n, j]], k, lut, row)
