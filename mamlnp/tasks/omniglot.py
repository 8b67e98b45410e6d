"""Few-shot classification on Omniglot (Finn et al. 2017, sec. 5.2): the MAML split and N-way
K-shot episodes.

Dimension legend: T tasks (episodes), N ways (classes per episode), K shots and Q query
drawings per class, C characters of a split, R = 20 drawings per character, D = 784 inputs
(28×28 pixels, ink = 1), O = N outputs (one-hot targets).

The protocol, as cbfinn/maml (data_generator.py, DataGenerator.__init__ and make_data_tensor;
main.py test):

* **Split.** All 1623 characters are listed, shuffled with Python's ``random`` seeded 1, and
  cut: the first 1100 meta-train, the next 100 meta-validation (``num_train = 1200 − 100``,
  ``metaval = [num_train : num_train + 100]``), the remaining 423 test (``--test_set``). The
  reference lists the folders with ``os.listdir`` (an order the file system chooses), so its
  exact split cannot be recreated; here the same shuffle (``random.Random(1).shuffle``) runs on
  the sorted "Alphabet/characterNN" list, the same on every machine.
* **Episodes.** N distinct characters of the split, drawn in random order (so the label a
  character gets is random in every episode); each class rotated by a random multiple of 90°
  (``tf.multinomial`` over 4 rotations per class, at training and at test: a rotated character
  is a class of its own); K + Q distinct drawings per class, the first K the support set, the
  other Q the query set (the reference uses Q = K: ``DataGenerator(update_batch_size * 2, …)``).
  Targets are one-hot. The reference orders the rows k-major; here they are class-major
  (row n·K + k): the MLP's loss and batch statistics do not depend on the order of the rows.
"""
import random

import numpy as np

from ..errors import InputError
from ..validation import as_rng, boolean, check_memory, choice, nonneg_int, positive_int
from . import omniglot_data as data
from .base import TaskBatch, TaskFamily

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
class OmniglotTasks(TaskFamily):
    """N-way K-shot Omniglot episodes on the MAML split (see the module docstring).

    data_dir: the folder holding images_background(.zip) and images_evaluation(.zip);
        None: $MAMLNP_DATA_DIR, else the user cache folder (``<user cache>/omniglot``, see
        :func:`mamlnp.tasks.omniglot_data.user_cache_dir`).
    ways: N, the classes of an episode (the network's output_dim).
    download: fetch the official zips (pooch, SHA-256, progress bar) if they are missing.
    cache_dir: where the preprocessed ``.npz`` goes (None: the user cache folder).
    resize: "lanczos" (default: grey antialiased 28×28) or "nearest" (the binary images the
        reference's resize script really produced); see omniglot_data.preprocess.
    num_train, num_val, split_seed: the split (1200 of which 100 validation, seed 1).
    rotations: True (each class turned by a random multiple of 90°) or False.
    require_full: refuse a copy without the official 50 alphabets / 1623 characters.
    """

    input_dim = data.SIZE ** 2
    episodic = True                 # draws whole episodes: sample(), not sample_params()/…

    def __init__(self, data_dir=None, ways=5, download=False, cache_dir=None, resize="lanczos",
                 num_train=1200, num_val=100, split_seed=1, rotations=True, require_full=True):
        self.ways = positive_int("ways", ways)
        if self.ways < 2:
            raise InputError(f"ways: expected at least 2 classes per episode (with one, every "
                             f"prediction is right and the loss is 0), got {ways!r}")
        self.rotations = boolean("rotations", rotations)
        self.resize = choice("resize", resize, data.RESIZES)
        self.data_dir = data.resolve_data_dir(data_dir)
        if boolean("download", download):
            data.download(self.data_dir)
        self.cache_dir = data.resolve_cache_dir(cache_dir)
        self.keys, self._ink = data.load_images(self.data_dir, self.cache_dir, self.resize,
                                                boolean("require_full", require_full))
        self.split = _make_split(len(self.keys), num_train, num_val, split_seed)
        small = min(len(v) for v in self.split.values())
        if self.ways > small:
            raise InputError(f"ways: expected at most {small} (the characters of the smallest "
                             f"split), got {self.ways}")

    @property
    def output_dim(self):
        return self.ways

    def __repr__(self):
        sizes = ", ".join(f"{s}={len(v)}" for s, v in self.split.items())
        return f"OmniglotTasks(ways={self.ways}, {sizes}, resize={self.resize!r})"

    def characters(self, split):
        """float64 (C, R, D): the un-rotated drawings of a split's characters, ink = 1, exactly
        as fed to the network (x = ink / 255)."""
        idx = self.split[choice("split", split, SPLITS)]
        return self._ink[idx].reshape(len(idx), data.DRAWINGS, -1) / 255.0  # (C, R, D)

    def character_names(self, split):
        """The "Alphabet/characterNN" names of a split, in the order of :meth:`characters`."""
        return [self.keys[i] for i in self.split[choice("split", split, SPLITS)]]

    # --- episodes -------------------------------------------------------------------------

    def sample(self, rng, num_tasks, shots, query=None, split="train"):
        """A TaskBatch of ``num_tasks`` fresh N-way episodes of ``split``: x_support
        (T, N·K, D), y_support (T, N·K, N) one-hot, x_query (T, N·Q, D), y_query (T, N·Q, N).
        query=None: Q = K, as the reference."""
        rng = as_rng("rng", rng)
        T, K, Q = self._counts(num_tasks, shots, query)
        return self._episodes(rng, choice("split", split, SPLITS), T, K, Q)

    def episodes(self, split, num_tasks, shots, query=None, seed=0, start=0):
        """Fixed episodes: episode ``start + j`` of (split, seed) is the same whatever chunk it
        is drawn in (each from its own SeedSequence((seed, split, index))), so 600 test
        episodes can be scored in pieces. Returns a TaskBatch as :meth:`sample`."""
        split = choice("split", split, SPLITS)
        T, K, Q = self._counts(num_tasks, shots, query, parts=True)
        start, seed = nonneg_int("start", start), nonneg_int("seed", seed)
        parts = [self._episodes(np.random.default_rng([seed, _SPLIT_CODE[split], start + j]),
                                split, 1, K, Q) for j in range(T)]
        return TaskBatch(*(np.concatenate([getattr(p, f) for p in parts])
                           for f in ("x_support", "y_support", "x_query", "y_query")))

    def _counts(self, num_tasks, shots, query, parts=False):
        """(T, K, Q) checked: K + Q drawings of a character at most, and the episodes' arrays
        within memory before any is drawn (InputError, not a MemoryError after seconds)."""
        T, K = positive_int("num_tasks", num_tasks), positive_int("shots", shots)
        Q = K if query is None else positive_int("query", query)
        if K + Q > data.DRAWINGS:
            raise InputError(f"shots + query: expected at most {data.DRAWINGS} (the drawings of a "
                             f"character), got {K} + {Q} = {K + Q}")
        N, D, C = self.ways, self.input_dim, max(len(c) for c in self.split.values())
        per_task = N * (K + Q) * (2 * 8 * D + D + 8 * N) + 16 * C + 24 * N * data.DRAWINGS
        check_memory("num_tasks", T, T * per_task * (2 if parts else 1),  # parts, concatenated
                     f"{T} episodes of {N}·({K}+{Q}) rows of {D} inputs, and their draws")
        return T, K, Q

    def episode_classes(self, split, shots, query=None, seed=0, index=0):
        """What episode ``index`` of ``episodes(split, ·, shots, query, seed)`` is made of: one
        dict per label n = 0 … N−1 with the character's name, its rotation (degrees,
        counter-clockwise) and the drawings used (the first K support, the next Q query)."""
        split = choice("split", split, SPLITS)
        _, K, Q = self._counts(1, shots, query)
        seed, index = nonneg_int("seed", seed), nonneg_int("index", index)
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
        chars, draws, turns = self._draw(rng, split, 1, K, Q)
        return [{"label": n, "character": self.keys[chars[0, n]], "rotation": 90 * int(turns[0, n]),
                 "support_drawings": draws[0, n, :K].tolist(),
                 "query_drawings": draws[0, n, K:].tolist()} for n in range(self.ways)]

    def sample_with(self, rng, num_tasks, shots, query, kernels):
        """``sample(rng, num_tasks, shots, query)`` on the "train" split, the work on the draws
        done by ``kernels`` = (smallest_columns, episode_rows, lut): the compiled ones of
        mamlnp/fast/episode_kernels.py through mamlnp.fast.episodes.sample_compiled,
        the numba backend's training loop's sampler. The same draws in the same order, the
        same episodes bit for bit."""
        smallest_columns, episode_rows, lut = kernels
        T, K, Q = self._counts(num_tasks, shots, query)        # K + Q ≤ 20: the kernel's reads
        N, D = self.ways, self.input_dim
        chars, draws, turns = self._draw(rng, "train", T, K, Q, smallest_columns)
        xs, xq = np.empty((T, N * K, D)), np.empty((T, N * Q, D))
        episode_rows(self._ink, chars, np.ascontiguousarray(draws), turns, lut, xs, xq)
        ys, yq = _one_hot(T, N, K, Q)
        return TaskBatch(xs, ys, xq, yq)

    def _draw(self, rng, split, T, K, Q, smallest_columns=None):
        """(characters (T, N) indices into keys, drawings (T, N, K+Q), quarter turns (T, N));
        smallest_columns: the compiled twin of ``_smallest`` to use (the same indices)."""
        N, chars = self.ways, self.split[split]
        u = rng.random((T, len(chars)))                                     # (T, C)
        if smallest_columns is None or N >= len(chars):
            picked = _smallest(u, N)                                        # (T, N) distinct, random order
        else:
            picked = np.empty((T, N), np.int64)
            smallest_columns(u, picked)
        draws = np.argsort(rng.random((T, N, data.DRAWINGS)), axis=2)[:, :, :K + Q]  # (T, N, K+Q)
        turns = rng.integers(0, 4, size=(T, N)) if self.rotations else np.zeros((T, N), int)
        return chars[picked], draws, turns

    def _episodes(self, rng, split, T, K, Q):
        N = self.ways
        chars, draws, turns = self._draw(rng, split, T, K, Q)
        u8 = self._ink[chars[:, :, None], draws]                              # (T, N, K+Q, S, S)
        for k in range(1, 4):                                                 # turned by k·90°
            sel = turns == k                                                  # (T, N)
            u8[sel] = np.rot90(u8[sel], k, axes=(-2, -1))                     # counter-clockwise
        D, u8 = self.input_dim, u8.reshape(T, N, K + Q, -1)                   # (T, N, K+Q, D)
        xs, xq = np.empty((T, N, K, D)), np.empty((T, N, Q, D))
        np.divide(u8[:, :, :K], 255.0, out=xs)                                # ink = 1, one pass
        np.divide(u8[:, :, K:], 255.0, out=xq)
        ys, yq = _one_hot(T, N, K, Q)
        return TaskBatch(xs.reshape(T, N * K, D), ys, xq.reshape(T, N * Q, D), yq)

    # --- the regression-family interface does not describe episodes ------------------------

    def sample_params(self, rng, num_tasks):
        raise InputError("OmniglotTasks draws whole episodes: use family.sample(rng, T, shots, "
                         "query) or family.episodes(split, T, shots, query, seed)")

    sample_inputs = targets = sample_params


def _one_hot(T, N, K, Q):
    """(ys (T, N·K, N), yq (T, N·Q, N)): the one-hot targets of class-major rows, broadcast
    views (every episode has the same)."""
    eye = np.eye(N)
    ys = np.broadcast_to(np.repeat(eye, K, axis=0), (T, N * K, N))
    yq = np.broadcast_to(np.repeat(eye, Q, axis=0), (T, N * Q, N))
    return ys, yq


def _smallest(u, n):
    """Per row of u (T, C), the columns of its n smallest entries in increasing order of value:
    ``np.argsort(u, axis=1)[:, :n]`` (the same indices for distinct values, as random draws
    are), by a partial sort: O(C) instead of O(C log C) per row."""
    if n >= u.shape[1]:
        return np.argsort(u, axis=1)[:, :n]
    part = np.argpartition(u, n - 1, axis=1)[:, :n]                      # (T, n) unordered
    order = np.argsort(np.take_along_axis(u, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _make_split(num_chars, num_train, num_val, split_seed):
    """{"train", "val", "test"}: character indices (into the sorted key list), as the reference:
    shuffle all with random.seed(split_seed), then [:num_train − num_val], the next num_val, the rest."""
    num_train, num_val = positive_int("num_train", num_train), positive_int("num_val", num_val)
    if not num_val < num_train < num_chars:
        raise InputError(f"num_train, num_val: expected num_val < num_train < {num_chars} (the "
                         f"characters found), got num_train={num_train}, num_val={num_val}")
    order = list(range(num_chars))
    random.Random(nonneg_int("split_seed", split_seed)).shuffle(order)
    order = np.array(order)
    n_tr = num_train - num_val
    return {"train": order[:n_tr], "val": order[n_tr:num_train], "test": order[num_train:]}
