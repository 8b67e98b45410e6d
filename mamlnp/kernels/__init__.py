"""Numba kernels of the ``backend="numba"`` path (entry points: mamlnp/fast.py).

Dimension legend: T tasks, K support points, Q query points, N points of one
pass (K or Q), D inputs, O outputs, P parameters, L dense layers, s = inner_steps,
Hsum = sizes[1] + … + sizes[L] (all units of all layers, output included).

Every kernel here is the compiled twin of a NumPy function in mamlnp/mlp.py,
mamlnp/layers.py, mamlnp/losses.py or mamlnp/maml.py, and tests/test_kernels.py
checks each against its twin to 1e-12 relative.

Modules, bottom-up:
  * ``linalg``       the matrix products: ``gemm_acc`` (a direct BLAS dgemm on flat buffers)
                     and ``thin_product`` (loops for products with a dimension of 1)
  * ``mlp_kernels``  forward, loss, backward and R-pass (HVP) of the MLP on one task
  * ``maml_kernels`` inner loop, reverse pass of the meta-gradient, the drivers
                     parallel over tasks

Conventions: every array is flat (1-d, row-major) and addressed by offsets, so
no view is created inside loops; the layer geometry arrives as int64 arrays
``sizes`` (L+1,), ``woff``/``boff`` (L,) (offsets of W_l and b_l in θ, as in
``MLP.layout``) and ``coff`` (L,) (column offset of layer l in a per-point cache
row of width Hsum; a cache for N points stores layer l at [N·coff[l], N·coff[l+1])
as an (N, sizes[l+1]) row-major block). Activation ids: 0 relu, 1 tanh, 2 softplus;
loss ids: 0 mse, 1 softmax_xent.

Threads: the drivers run tasks in parallel with ``prange`` (numba's threading layer,
``NUMBA_NUM_THREADS``). With the OpenMP layer, what an idle worker does between two
parallel regions decides the cost of a short call:
  * libgomp's default spins for a long while (GOMP_SPINCOUNT 300,000 by default);
    several processes spinning against each other on a shared machine stalled every
    call (median 12 ms instead of 0.6 ms per meta-gradient, load average 7–8);
  * ``OMP_WAIT_POLICY=passive`` sleeps at once: the next call pays the wake-up,
    0.51 ms instead of 0.27 ms per meta-gradient (s = 1, 2 threads) on a quiet machine
    and also with two CPU hogs running (``yes > /dev/null`` ×2);
  * a short spin, ``GOMP_SPINCOUNT=10000``, measured 0.26–0.27 ms in both cases.
So, unless the user has chosen otherwise, ``GOMP_SPINCOUNT`` is set to 10000 here,
before numba starts its OpenMP pool (libgomp reads it once, when it starts).
(Measured with the loop in docs/performance.md, "Threads".)
"""
import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")

ACT_IDS = {"relu": 0, "tanh": 1, "softplus": 2}
LOSS_IDS = {"mse": 0, "softmax_xent": 1}
