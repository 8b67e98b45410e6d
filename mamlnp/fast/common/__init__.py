"""Kernels shared by every kernel set, the kernels' conventions, and the stale-cache guard.

Dimension legend: T tasks, K support points, Q query points, N points of one
pass (K or Q), D inputs, O outputs, P parameters, L dense layers, s = inner_steps,
Hsum = sizes[1] + … + sizes[L] (all units of all layers, output included).

Every kernel of mamlnp/fast/ is the compiled twin of a NumPy function (its module's
docstring names the reference, file and function, and its test file). The modules:

  common/   ``linalg``  (the matrix products: ``gemm_acc``, a direct BLAS dgemm on flat
            buffers, ``thin_product`` loops for products with a dimension of 1, ``gemm_st``
            cut under OpenBLAS's threading threshold); ``atomics`` (``fetch_add``, the one
            atomic operation); ``blas_threads`` (``one_blas_thread``, Python); ``bundles`` (the named tuples below);
            ``adam`` (Adam's step: mamlnp/meta/optim.py Adam._step)
  mlp/      ``mlp_kernels`` (forward, loss, backward, R-pass of one task: nn/mlp.py),
            ``thin_layers`` (the D = 1 and O = 1 layers fused with their neighbour's
            elementwise work), ``maml_kernels`` (inner loop, reverse pass, drivers parallel
            over tasks: meta/maml.py), ``train_kernels`` (one whole training iteration),
            ``kernelset`` (the set), ``fused`` (the fused training step's driver)
  bn_mlp/   ``bn_kernels`` (the batch-norm layer's four passes fused with σ: nn/batchnorm.py),
            ``bn_mlp_kernels`` (the batch-norm MLP's passes, the first layer's product given),
            ``classify_kernels`` (one task at a time), ``classify_groups`` and
            ``group_products`` (s = 1 over groups of tasks), ``first_layer`` (x W1, Gram
            matrices and ∇W1 on packed or CSR/CSC rows), ``kernelset`` (the set)
  conv/     ``conv_kernels`` (im2col/col2im, the ConvNet's passes: nn/conv.py, nn/convnet.py),
            ``bn2d`` (batch norm's R-backward row by row), ``conv_maml`` (one task's
            meta-gradient, the drivers: meta/maml.py), ``kernelset`` (the set)
  policy/   ``policy_kernels`` (the navigation policy's row passes: nn/policy_ops.py; 2-d
            (·, M) arrays, not flat, called from Python per task: ``CompiledPoint``)
  fast/     ``episode_kernels`` (Omniglot episodes: tasks/omniglot.py)

Conventions: every array is flat (1-d, row-major) and addressed by offsets, so
no view is created inside loops.  A kernel takes its data (θ, the tasks' points)
as arrays, and its model geometry, its scratch and its per-call settings as a few
named bundles (``typing.NamedTuple``, bundles.py; Numba reads a field such as
``geom.woff`` at no cost), then its outputs:

  Geometry(sizes, woff, boff, coff, act_id, loss_id)      ``fast.mlp.kernelset.geometry``
      sizes (L+1,) int64   D, hidden widths, O
      woff, boff (L,)      offsets of W_l (sizes[l], sizes[l+1]) and b_l in θ (``MLP.layout``)
      coff (L,)            column offset of layer l in a per-point cache row of width Hsum:
                           a cache for N points stores layer l at [N·coff[l], N·coff[l+1])
                           as an (N, sizes[l+1]) row-major block
      act_id               0 relu, 1 tanh, 2 softplus          (ACT_IDS below)
      loss_id              0 mse, 1 softmax_xent               (LOSS_IDS below)
  Workspace(TH, GS, CA, RB, SC, G, GA, losses, SU, CL)    ``mlp.maml_kernels.alloc_workspace``
      per thread (R = NUMBA_NUM_THREADS rows, row r = numba.get_thread_id()):
      TH (R, s+1, P)       iterates θ_k (row 0 unused: θ_0 = θ)
      GS (R, max(s,1), P)  support gradients ∇L_S(θ_k)
      CA (R, s+1, 5, max(K,Q)·Hsum)   the cache of each pass, rows Z, A, S, DZ, DH
      RB (R, 4, K·Hsum)    R-pass buffers, rows RZ, RH, RDZ, RDH
      SC (R, 2, P)         v = α ⊙ g, H v
      per task: G (T, P), GA (T, PA) gradients, losses (T,);
      SU (2, P) the prefix worker's running sums of G and GA rows; CL (3,) int64 the
      task counters of ``mlp.maml_kernels.next_task``
  Inner(alpha, s, first_order, ga_mode)                   the inner loop of one call
      alpha (1,) one scalar α, or (P,) one per parameter; s = inner_steps;
      first_order (FOMAML); ga_mode 0 no dL/dα, 1 scalar α (summed), 2 per parameter
  SinusoidDraws(u, rg, xs, ys, xq, yq)                    ``mlp.train_kernels.train_step``
      u (T·(2 + N),) uniforms, rg (7,) their ranges; xs, ys (T, K), xq, yq (T, Q) written
  AdamStep(g, m, v, hp, theta_out, m_out, v_out)          ``common.adam.adam_update``
      g (P,) the meta-gradient (written), m, v (P,) in, hp (8,) hyper-parameters,
      θ', m', v' (P,) out

One pass over N points keeps its cache in C (5, ≥ N·Hsum) (a row of CA: Z, A, S, DZ, DH)
and the R-pass its buffers in Rb (4, ≥ N·Hsum) (a row of RB: RZ, RH, RDZ, RDH).

Threads: the drivers run tasks in parallel with ``prange`` (numba's threading layer,
``NUMBA_NUM_THREADS``). With the OpenMP layer (GNU libgomp), a thread with nothing to do —
a worker between two parallel regions, the first thread done at the barrier that ends one —
spins ``GOMP_SPINCOUNT`` times, then sleeps in the kernel, and a sleeping thread costs a
wake-up (tens of µs in a VM, a scheduler tick when another process holds the core).
A worker that sleeps between the fused training step's parallel calls (s = 1, several per
millisecond) costs more than the spinning; ``benchmarks/bench_train.py`` times the step.
So mamlnp's own commands (``python -m mamlnp ...``, via ``mamlnp.fast.spin_threads``, called by
mamlnp/run/cli.py before any kernel runs) set ``GOMP_SPINCOUNT=3000000``: an idle worker then
spins about 80 ms of one core after the last parallel call before it sleeps, which is why
``top`` shows more than 100 % CPU for a training run. ``import mamlnp`` sets nothing: a library
user gets libgomp's default unless they set ``GOMP_SPINCOUNT`` before the first kernel call.
Turn the choice off with ``MAMLNP_SPIN=0`` (libgomp's default, 300,000 spins); a
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` of your own always wins.

Stale compiled code: Numba's on-disk cache (``cache=True``, in ``__pycache__`` next to the
sources) checks only the cached function's OWN file for changes, so after an edit of
``mlp/mlp_kernels.py`` a cached ``batch_meta_grad`` (in ``mlp/maml_kernels.py``) or
``group_meta_grad`` (in ``bn_mlp/``) would keep running the old code. ``drop_stale_cache``
(below, run when any kernel module is first imported: each imports ``common``) keeps a
SHA-256 of every source under mamlnp/fast/ and deletes the cache files of every folder under
it whenever that changes.
(With ``NUMBA_CACHE_DIR`` set, the cache lives elsewhere: clear it yourself after an edit.)
"""
import hashlib
import os

STAMP = "mamlnp-kernels.sha256"


def _sources(src_dir):
    """The ``.py`` files under ``src_dir`` (every folder but ``__pycache__``), as sorted
    paths relative to it."""
    found = []
    for root, dirs, files in os.walk(src_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.relpath(os.path.join(root, n), src_dir) for n in files
                  if n.endswith(".py")]
    return sorted(found)


def sources_digest(src_dir):
    """SHA-256 over the relative paths and bytes of the ``.py`` files under ``src_dir``."""
    h = hashlib.sha256()
    for name in _sources(src_dir):
        with open(os.path.join(src_dir, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def _cache_dirs(src_dir):
    return [os.path.join(root, "__pycache__") for root, dirs, _ in os.walk(src_dir)
            if "__pycache__" in dirs]


def drop_stale_cache(src_dir):
    """Delete the Numba cache files (.nbi/.nbc) in every ``__pycache__`` under ``src_dir``
    unless the stamp ``src_dir/__pycache__/STAMP`` matches ``sources_digest(src_dir)``; then
    write the stamp. Returns the number of files deleted. Never raises on I/O errors (a
    read-only install: Numba caches elsewhere)."""
    cache_dir = os.path.join(src_dir, "__pycache__")
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
        for folder in _cache_dirs(src_dir):
            for name in os.listdir(folder):
                if name.endswith((".nbi", ".nbc")):
                    os.remove(os.path.join(folder, name))
                    removed += 1
        tmp = f"{stamp}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(digest + "\n")
        os.replace(tmp, stamp)                               # atomic: never half a stamp
    except OSError:
        pass
    return removed


FAST = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))        # mamlnp/fast
drop_stale_cache(FAST)

ACT_IDS = {"relu": 0, "tanh": 1, "softplus": 2}
LOSS_IDS = {"mse": 0, "softmax_xent": 1}

from .bundles import AdamStep, Geometry, Inner, SinusoidDraws, Workspace  # noqa: E402
