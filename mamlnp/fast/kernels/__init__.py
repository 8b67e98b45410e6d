"""Numba kernels of the ``backend="numba"`` path (entry points: mamlnp/fast/api.py).

Dimension legend: T tasks, K support points, Q query points, N points of one
pass (K or Q), D inputs, O outputs, P parameters, L dense layers, s = inner_steps,
Hsum = sizes[1] + … + sizes[L] (all units of all layers, output included).

Every kernel here is the compiled twin of a NumPy function in mamlnp/nn/mlp.py,
mamlnp/nn/layers.py, mamlnp/nn/losses.py or mamlnp/meta/maml.py, and tests/test_kernels.py
checks each against its twin to 1e-12 relative.

Modules, bottom-up:
  * ``linalg``       the matrix products: ``gemm_acc`` (a direct BLAS dgemm on flat buffers)
                     and ``thin_product`` (loops for products with a dimension of 1)
  * ``mlp_kernels``  forward, loss, backward and R-pass (HVP) of the MLP on one task
  * ``maml_kernels`` inner loop, reverse pass of the meta-gradient, the drivers
                     parallel over tasks
  * ``train_kernels`` one whole training meta-iteration (sinusoid tasks, MAML, Adam)
  * ``bundles``      the named tuples below

Conventions: every array is flat (1-d, row-major) and addressed by offsets, so
no view is created inside loops.  A kernel takes its data (θ, the tasks' points)
as arrays, and its model geometry, its scratch and its per-call settings as a few
named bundles (``typing.NamedTuple``, bundles.py; Numba reads a field such as
``geom.woff`` at no cost), then its outputs:

  Geometry(sizes, woff, boff, coff, act_id, loss_id)      ``fast.api.geometry(model)``
      sizes (L+1,) int64   D, hidden widths, O
      woff, boff (L,)      offsets of W_l (sizes[l], sizes[l+1]) and b_l in θ (``MLP.layout``)
      coff (L,)            column offset of layer l in a per-point cache row of width Hsum:
                           a cache for N points stores layer l at [N·coff[l], N·coff[l+1])
                           as an (N, sizes[l+1]) row-major block
      act_id               0 relu, 1 tanh, 2 softplus          (ACT_IDS below)
      loss_id              0 mse, 1 softmax_xent               (LOSS_IDS below)
  Workspace(TH, GS, CA, RB, SC, G, GA, losses, SU, CL)    ``maml_kernels.alloc_workspace``
      per thread (R = NUMBA_NUM_THREADS rows, row r = numba.get_thread_id()):
      TH (R, s+1, P)       iterates θ_k (row 0 unused: θ_0 = θ)
      GS (R, max(s,1), P)  support gradients ∇L_S(θ_k)
      CA (R, s+1, 5, max(K,Q)·Hsum)   the cache of each pass, rows Z, A, S, DZ, DH
      RB (R, 4, K·Hsum)    R-pass buffers, rows RZ, RH, RDZ, RDH
      SC (R, 2, P)         v = α ⊙ g, H v
      per task: G (T, P), GA (T, PA) gradients, losses (T,);
      SU (2, P) the prefix worker's running sums of G and GA rows; CL (3,) int64 the
      task counters of ``maml_kernels.next_task``
  Inner(alpha, s, first_order, ga_mode)                   the inner loop of one call
      alpha (1,) one scalar α, or (P,) one per parameter; s = inner_steps;
      first_order (FOMAML); ga_mode 0 no dL/dα, 1 scalar α (summed), 2 per parameter
  SinusoidDraws(u, rg, xs, ys, xq, yq)                    ``train_kernels.train_step``
      u (T·(2 + N),) uniforms, rg (7,) their ranges; xs, ys (T, K), xq, yq (T, Q) written
  AdamStep(g, m, v, hp, theta_out, m_out, v_out)          ``train_kernels.adam_update``
      g (P,) the meta-gradient (written), m, v (P,) in, hp (8,) hyper-parameters,
      θ', m', v' (P,) out

One pass over N points keeps its cache in C (5, ≥ N·Hsum) (a row of CA: Z, A, S, DZ, DH)
and the R-pass its buffers in Rb (4, ≥ N·Hsum) (a row of RB: RZ, RH, RDZ, RDH).

Threads: the drivers run tasks in parallel with ``prange`` (numba's threading layer,
``NUMBA_NUM_THREADS``). With the OpenMP layer (GNU libgomp), a thread with nothing to do —
a worker between two parallel regions, the first thread done at the barrier that ends one —
spins ``GOMP_SPINCOUNT`` times, then sleeps in the kernel, and a sleeping thread costs a
wake-up (tens of µs in a VM, a scheduler tick when another process holds the core).
``benchmarks/bench_threads.py`` times the fused training step (s = 1, SO; median ms per
meta-iteration, fresh processes) for several settings; ranges over 2–3 runs, 2026-11-26:

    GOMP_SPINCOUNT        quiet              1 CPU hog          2 trainings at once
    10,000                0.24–0.25          0.33–0.86          0.86–0.92
    300,000 (default)     0.20–0.29          0.62–0.86          0.88–0.99
    1,000,000             0.20–0.25          0.20–0.29          0.24–0.31
    3,000,000             0.203–0.205        0.20–0.23          0.20–0.22

So, unless the user has chosen otherwise, ``GOMP_SPINCOUNT`` is set to 3,000,000 here,
before numba starts its OpenMP pool (libgomp reads it once, when it starts): an idle
worker spins about 80 ms of one core after the last call before it sleeps. (An earlier
version set 10,000, from measurements on older kernels; the figures above overturned it.)

Stale compiled code: Numba's on-disk cache (``cache=True``, in ``__pycache__`` next to the
sources) checks only the cached function's OWN file for changes, so after an edit of
``mlp_kernels.py`` a cached ``batch_meta_grad`` (in ``maml_kernels.py``) would keep running the
old code. ``drop_stale_cache`` (below, run at import) keeps a SHA-256 of all the kernel
sources beside the cache and deletes this package's cache files whenever it changes.
(With ``NUMBA_CACHE_DIR`` set, the cache lives elsewhere: clear it yourself after an edit.)
"""
import hashlib
import os

os.environ.setdefault("GOMP_SPINCOUNT", "3000000")

STAMP = "mamlnp-kernels.sha256"


def sources_digest(src_dir):
    """SHA-256 over the names and bytes of the ``.py`` files in ``src_dir`` (sorted)."""
    h = hashlib.sha256()
    for name in sorted(n for n in os.listdir(src_dir) if n.endswith(".py")):
        with open(os.path.join(src_dir, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def drop_stale_cache(src_dir, cache_dir):
    """Delete the Numba cache files (.nbi/.nbc) in ``cache_dir`` unless the stamp there
    matches ``sources_digest(src_dir)``; then write the stamp. Returns the number of files
    deleted. Never raises on I/O errors (a read-only install: Numba caches elsewhere)."""
    digest, stamp = sources_digest(src_dir), os.path.join(cache_dir, STAMP)
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return 0
    except OSError:
        pass
    removed = 0
    try:
        os.makedirs(cache_dir, exist_ok=True)
        for name in os.listdir(cache_dir):
            if name.endswith((".nbi", ".nbc")):
                os.remove(os.path.join(cache_dir, name))
                removed += 1
        tmp = f"{stamp}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(digest + "\n")
        os.replace(tmp, stamp)                               # atomic: never half a stamp
    except OSError:
        pass
    return removed


_HERE = os.path.dirname(os.path.abspath(__file__))
drop_stale_cache(_HERE, os.path.join(_HERE, "__pycache__"))

ACT_IDS = {"relu": 0, "tanh": 1, "softplus": 2}
LOSS_IDS = {"mse": 0, "softmax_xent": 1}

from .bundles import AdamStep, Geometry, Inner, SinusoidDraws, Workspace  # noqa: E402
