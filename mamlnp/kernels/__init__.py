"""Numba kernels of the ``backend="numba"`` path (entry points: mamlnp/fast.py).

Dimension legend: T tasks, K support points, Q query points, N points of one
pass (K or Q), D inputs, O outputs, P parameters, L dense layers, s = inner_steps,
Hsum = sizes[1] + … + sizes[L] (all units of all layers, output included).

Every kernel here is the compiled twin of a NumPy function in mamlnp/mlp.py,
mamlnp/layers.py, mamlnp/losses.py or mamlnp/maml.py, and tests/test_kernels.py
checks each against its twin to 1e-12 relative.

Modules, bottom-up:
  * ``linalg``       the one matrix-product kernel (``gemm_acc``) and a transpose
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
``NUMBA_NUM_THREADS``). With the OpenMP layer, GNU libgomp's default lets idle threads
*spin* after each parallel region; on a machine shared with other processes a spinning or
descheduled worker then stalls every call: we measured a median of 12 ms instead of
0.6 ms per meta-gradient on a loaded 2-core machine (docs/performance.md). So, unless the
user has chosen otherwise, ``OMP_WAIT_POLICY`` is set to ``passive`` here, before numba
starts its OpenMP pool (it is read once, when libgomp starts). Set it to ``active`` in the
environment to get spinning back on a dedicated machine.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

ACT_IDS = {"relu": 0, "tanh": 1, "softplus": 2}
LOSS_IDS = {"mse": 0, "softmax_xent": 1}
