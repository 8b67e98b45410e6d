"""The compiled path: one kernel set per model kind, and ``kernels_for``, the one dispatch point.

Dimension legend: none (the dispatch; shapes in mamlnp/fast/kernelset.py).

    fast/
      __init__.py      kernels_for (from kernelset.py), compiled_point, spin_threads
      kernelset.py     KernelSet: what every set provides (methods, argument order);
                       SETS, the registered kinds; kernels_for(model, method, alpha)
      common/          kernels shared by the sets: linalg (BLAS dgemm), threads (the atomic
                       task counter, OpenBLAS on one thread), bundles, adam (Adam's twin);
                       its __init__ drops stale compiled code
      mlp/             the plain MLP (sinusoid regression): its kernels and its set
      bn_mlp/          the batch-norm MLP (classification): its kernels and its set
      conv/            the ConvNet (Omniglot form: no pool, spatial mean): its kernels and set
      policy/          the navigation policy's point with its row passes compiled
                       (``compiled_point``; not a model kind of kernels_for: meta/rl.py's)
      episodes.py, episode_kernels.py   Omniglot episodes, compiled (not a model kind)
      compile_notice.py                 the one-line notice while Numba compiles

What may import what: fast/ imports nn/, tasks/, errors and validation, never meta/ or run/.
mamlnp/meta/maml.py asks ``kernels_for`` (through its own ``kernels_for(model, backend, …)``,
which adds the choice of backend) and runs its NumPy reference when the answer is None;
run/ reaches the compiled path only through the sets ``kernels_for`` returns.

Nothing here imports Numba: the sets load (and Numba with them) at the first ``kernels_for``.
"""
import os

from .kernelset import SETS, kernels_for  # noqa: F401  (the one dispatch point)

def compiled_point():
    """``CompiledPoint`` (mamlnp/fast/policy/): the navigation policy's FactoredPoint with
    its row passes compiled; loads Numba. Asked by mamlnp/meta/maml.py's
    ``compiled_point_class``, the one place that dispatches to fast/."""
    from .policy import CompiledPoint
    return CompiledPoint


SPINCOUNT = "3000000"            # GOMP_SPINCOUNT of mamlnp's commands (common/__init__.py)


def spin_threads(environ=os.environ):
    """Set ``GOMP_SPINCOUNT`` to SPINCOUNT in ``environ`` unless the user chose: returns the
    value in effect (None: libgomp's default). Not done on import; the CLI calls it before any
    kernel starts the OpenMP pool (libgomp reads it once, at start). ``MAMLNP_SPIN=0``: skip.
    Why: mamlnp/fast/common/__init__.py (Threads)."""
    if environ.get("MAMLNP_SPIN", "").strip() == "0" or "OMP_WAIT_POLICY" in environ:
        return environ.get("GOMP_SPINCOUNT")
    return environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
