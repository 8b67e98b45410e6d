"""Omniglot episodes in compiled code: the classes' pick and the episode's input rows.

Dimension legend: T tasks (episodes), N ways, K shots and Q query drawings per class,
C characters of a split, R = 20 drawings per character, S = 28 pixels a side, D = S·S.

For the numba backend's training loop (``OmniglotTasks.sample_compiled``, called by
mamlnp.run.trainstep.sample_batch): the same draws from the run's generator as
``OmniglotTasks.sample``, made in NumPy by the caller; these kernels only replace the NumPy
work done on them (~1 ms per 5-way 1-shot meta-batch of 32: a partial sort, fancy
indexing, boolean-mask rotations and a division).

Twins (tests/test_episode_kernels.py checks each bit for bit, not to a tolerance):
  * ``smallest_columns`` = mamlnp.tasks.omniglot._smallest (= ``argsort(u)[:, :n]``): per
    row of u (T, C), the columns of its n smallest entries in increasing order of value,
    by insertion into a sorted list of n (O(C·n), n = N ≤ C). For distinct entries, as
    random doubles are, the answer is unique; (ties, which NumPy's partition leaves in no
    documented order, go here to the lower column);
  * ``episode_rows`` = the rest of ``OmniglotTasks._episodes``: the drawing
    ink[c, r] (S, S) uint8 of each class, turned counter-clockwise by k quarter turns as
    ``np.rot90(·, k)``, divided by 255.0 (uint8 → float64, then one IEEE division, as
    ``np.divide(u8, 255.0)``), row n·K + j of xs (j < K) or n·Q + j − K of xq.
"""
from numba import njit


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
def rotated_pixel(img, a, b, k):
    """np.rot90(img, k)[a, b] for a square (S, S) img, k in 0 … 3 (counter-clockwise)."""
    S1 = img.shape[0] - 1
    if k == 0:
        return img[a, b]
    if k == 1:
        return img[b, S1 - a]
    if k == 2:
        return img[S1 - a, S1 - b]
    return img[S1 - b, a]


@njit(cache=True, _nrt=False)
def episode_rows(ink, chars, draws, turns, xs, xq):
    """The episodes' inputs: ink (·, R, S, S) uint8, chars (T, N) rows of ink, draws
    (T, N, K+Q) drawings, turns (T, N) quarter turns; xs (T, N·K, D), xq (T, N·Q, D)
    float64 ← rot90(ink[chars[t, n], draws[t, n, j]], turns[t, n]) / 255, the first K
    drawings of class n into xs[t, n·K + j], the other Q into xq[t, n·Q + j − K]."""
    T, N, KQ, S = draws.shape[0], draws.shape[1], draws.shape[2], ink.shape[2]
    K = xs.shape[1] // N
    Q = KQ - K
    for t in range(T):
        for n in range(N):
            k = turns[t, n] % 4
            for j in range(KQ):
                img = ink[chars[t, n], draws[t, n, j]]                 # (S, S)
                row = xs[t, n * K + j] if j < K else xq[t, n * Q + j - K]
                for a in range(S):
                    for b in range(S):
                        row[a * S + b] = rotated_pixel(img, a, b, k) / 255.0
