"""Where the time of one Numba meta-gradient goes: each kernel alone, in µs of CPU time.

    python benchmarks/profile_kernels.py [--repeats 5000]

Dimension legend: T = 25 tasks, K = Q = 10 points, P = 1761 parameters (1-40-40-1 ReLU),
s = inner_steps.

Each kernel of mamlnp/kernels is called in a compiled loop on one task's buffers, and
timed by the thread's CPU clock (time.thread_time: a loaded machine inflates wall time,
much less CPU time); the best of 5 runs is printed. Then: the 8 BLAS calls of one R-pass
alone (linalg.gemm_acc; to split them from the rest), one BLAS product of each of the three
kinds a task makes (forward h W, backward dz Wᵀ and hᵀ dz: OpenBLAS's nn, nt and tn small
kernels), the fused training step's serial tail (``mean_and_adam``: the calling thread's 13
gradient rows added in order, / T, Adam), one task's whole meta-gradient, and the 25-task driver on one thread
(numba.set_num_threads(1)) and on all threads (wall time).
Nothing is asserted.
"""
import argparse
import time

import numba
import numpy as np
from numba import njit

import mamlnp
from mamlnp.fast.mlp import kernelset as fast
from mamlnp.fast import spin_threads
from mamlnp.fast.mlp import maml_kernels as MK
from mamlnp.fast.common.bundles import AdamStep, Inner
from mamlnp.fast.common.linalg import gemm_acc
from mamlnp.fast.mlp.mlp_kernels import backward, forward, loss_and_dyhat, rpass
from mamlnp.fast.mlp.train_kernels import mean_and_adam

spin_threads()      # the CLI's thread-spin setting (mamlnp/fast/__init__.py)

T, K, Q, ALPHA = 25, 10, 10, 0.01


@njit
def loop_forward(n, th, x, geom, C):
    for _ in range(n):
        forward(th, x, K, geom, C)


@njit
def loop_backward(n, th, x, geom, C, g):
    for _ in range(n):
        backward(th, x, K, geom, C, g)


@njit
def loop_rpass(n, th, v, x, geom, C, R, hv):
    for _ in range(n):
        rpass(th, v, x, K, geom, C, R, hv)


@njit
def loop_rpass_products(n, th, v, x, A, DZ, R, hv):
    """The 8 BLAS dgemm calls of one 1-40-40-1 R-pass, nothing else (offsets hard-coded):
    6 of shape 10×40·40×40 (the hidden layer), 2 of 10×40·40×1 (Rz of the O = 1 output
    layer). The thin products of the D = 1 and O = 1 layers are in the fused loops of
    mlp/thin_layers.py, with the elementwise work, and not counted here."""
    RZ, RH, RDZ, RDH = R[0], R[1], R[2], R[3]
    for _ in range(n):
        gemm_acc(A, 0, False, v, 80, False, RZ, 400, 10, 40, 40, 0)            # h V_W, l = 1
        gemm_acc(RH, 0, False, th, 80, False, RZ, 400, 10, 40, 40, 1)          # + Rh W
        gemm_acc(A, 400, False, v, 1720, False, RZ, 800, 10, 40, 1, 0)         # l = 2
        gemm_acc(RH, 400, False, th, 1720, False, RZ, 800, 10, 40, 1, 1)
        gemm_acc(A, 0, True, RDZ, 400, False, hv, 80, 40, 10, 40, 0)           # hᵀ Rdz, l = 1
        gemm_acc(RH, 0, True, DZ, 400, False, hv, 80, 40, 10, 40, 1)           # + Rhᵀ dz
        gemm_acc(RDZ, 400, False, th, 80, True, RDH, 0, 10, 40, 40, 0)         # Rdz Wᵀ
        gemm_acc(DZ, 400, False, v, 80, True, RDH, 0, 10, 40, 40, 1)           # + dz V_Wᵀ


@njit
def loop_gemm(n, A, B, C, M, R, W, ta, tb):
    """One linalg.gemm_acc product of a task's shapes, n times (β = 0)."""
    for _ in range(n):
        gemm_acc(A, 0, ta, B, 0, tb, C, 0, M, R, W, 0)


@njit
def loop_tail(n, th, ws, adam):
    """The fused step's tail: 13 rows added in order, / T, finiteness, Adam (P = 1761)."""
    for _ in range(n):
        mean_and_adam(th, ws, adam)


@njit
def loop_task(n, theta, xs, ys, xq, yq, inner, geom, ws):
    for _ in range(n):
        MK.task_meta_grad(theta, xs[0], ys[0], xq[0], yq[0], inner, geom, ws, 0, 0)


def best_us(f, *args, n=5000, clock=time.thread_time):
    f(1, *args)                                               # compile
    best = np.inf
    for _ in range(5):
        t = clock()
        f(n, *args)
        best = min(best, (clock() - t) / n)
    return best * 1e6


def one_task_rows(model, th, n):
    """The kernels of one pass on one task's buffers, the BLAS products alone, the tail."""
    geom = fast.geometry(model)
    P, Hsum = model.num_params, 81
    batch = mamlnp.SinusoidTasks().sample(0, 1, K, Q)
    x, y = batch.x_support.ravel().copy(), batch.y_support.ravel().copy()
    C, R = np.zeros((5, K * Hsum)), np.zeros((4, K * Hsum))  # Z, A, S, DZ, DH; RZ … RDH
    g, hv = np.zeros(P), np.zeros(P)
    v = np.random.default_rng(0).standard_normal(P)
    forward(th, x, K, geom, C)
    loss_and_dyhat(C[0], C[1], C[3], K * geom.coff[2], y, K, 1, geom.loss_id)
    rows = [("forward (K=10 points)", best_us(loop_forward, th, x, geom, C, n=n)),
            ("backward", best_us(loop_backward, th, x, geom, C, g, n=n)),
            ("R-pass (H v)", best_us(loop_rpass, th, v, x, geom, C, R, hv, n=n)),
            ("  of which its 8 BLAS calls (gemm_acc)", best_us(loop_rpass_products, th, v, x,
                                                              C[1], C[3], R, hv, n=n))]
    for label, (M, I, W, ta, tb) in (("z = h W      10×40·40×40", (10, 40, 40, False, False)),
                                     ("dh = dz Wᵀ   10×40·(40×40)ᵀ", (10, 40, 40, False, True)),
                                     ("dW = hᵀ dz   (10×40)ᵀ·10×40", (40, 10, 40, True, False))):
        bufs = [np.random.default_rng(1).standard_normal(k) for k in (M * I, I * W, M * W)]
        rows.append((f"  dgemm {label}", best_us(loop_gemm, *bufs, M, I, W, ta, tb, n=n)))
    r = np.random.default_rng(2)
    ws = MK.alloc_workspace(T, P, 1, K, Q, Hsum, 1)
    ws.G[:], ws.SU[0], ws.CL[2] = r.standard_normal((T, P)), r.standard_normal(P), 12
    adam = AdamStep(np.empty(P), 0.01 * r.standard_normal(P), 0.01 * r.random(P),
                    np.array([1e-3, 0.9, 0.1, 0.999, 0.001, 1e-8, 0.5, 0.5]), np.empty(P),
                    np.empty(P), np.empty(P))
    rows.append(("fused step's tail (13 rows summed, Adam)",
                 best_us(loop_tail, r.standard_normal(P), ws, adam, n=n)))
    return rows


def meta_gradient_rows(model, th, n):
    """One task's whole meta-gradient, then the 25-task driver on 1 thread and on all."""
    geom, P = fast.geometry(model), model.num_params
    batch = mamlnp.SinusoidTasks().sample(0, T, K, Q)
    xs, ys, xq, yq = (a.reshape(T, -1) for a in (batch.x_support, batch.y_support,
                                                 batch.x_query, batch.y_query))
    alpha, rows = np.full(1, ALPHA), []                        # one scalar α: (1,)
    for s, fo in ((1, False), (1, True), (5, False)):
        ws = fast.workspace(geom, T, P, s, K, Q, 1)
        rows.append((f"one task, s={s} {'FO' if fo else 'SO'}",
                     best_us(loop_task, th, xs, ys, xq, yq, Inner(alpha, s, fo, 0), geom, ws,
                             n=max(n // 10, 10))))
    threads = numba.get_num_threads()
    for nt, clock, label in ((1, time.thread_time, "CPU"), (threads, time.perf_counter, "wall")):
        numba.set_num_threads(nt)
        for s, fo in ((1, False), (1, True), (5, False)):
            def call(k, s=s, fo=fo):
                for _ in range(k):
                    fast.meta_grad(geom, th, xs, ys, xq, yq, alpha, s, fo, 0)
            rows.append((f"driver, {T} tasks, {nt} thread(s), s={s} {'FO' if fo else 'SO'} "
                         f"({label})", best_us(call, n=max(n // 100, 10), clock=clock)))
    numba.set_num_threads(threads)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5000)
    n = p.parse_args(argv).repeats
    model = mamlnp.MLP((1, 40, 40, 1), "relu", "mse")
    th = model.init(0, scheme="uniform")
    for name, us in one_task_rows(model, th, n) + meta_gradient_rows(model, th, n):
        print(f"{name:48s} {us:9.2f} µs")


if __name__ == "__main__":
    main()
