"""Where the time of the RL derivatives goes, one task: each pass alone, in ms of CPU time,
and in units of one (M × H × H) matrix product.

    python benchmarks/profile_rl_passes.py [--steps 2000] [--repeats 30]

Dimension legend: M timesteps of one task, H = 100 hidden units, A = 2 actions, P = 10604
parameters (the 2-100-100-2 ReLU navigation policy).

Rows: the two BLAS products of a factored HVP alone (h̃1 Ṽ2 and h̃1ᵀ R{dz2}); an HVP and a
Fisher product through the Jacobian factors (mamlnp/nn/policy_factors.py, 2 such products
each) and through the general R-pass (mamlnp/nn/policy.py, 6 and 4); the factors' set-up;
one task's lvc meta-gradient with the passes written out and with the R-pass (12 products
each). Last, the question of a compiled kernel set: the elementwise end of the factored JVP
(u2 = s2 ⊙ Z, Rμ = u2 W3 + h̃2 Ṽ3 + (x̃ Ṽ1)·δ1, after the product Z = h̃1 Ṽ2) as NumPy does
it, and as one fused Numba row loop (no fastmath, as the project's kernels: its sums over
H stay in order, so they do not vectorise); the same for the R-backward's elementwise end
(R{dz2}, x̃ᵀ Σ_j r_j δ1_j, h̃2ᵀ r). Timed by the thread's CPU clock
(time.thread_time), median of ``repeats`` after a warm-up; one BLAS thread. Nothing is
asserted.
"""
import argparse
import statistics
import time

import numpy as np
from numba import njit

import mamlnp
from mamlnp.meta import rl
from mamlnp.nn.policy import PolicyPoint
from mamlnp.nn.policy_factors import FactoredPoint
from mamlnp.run.process import keep_freed_memory, single_blas_thread


@njit(cache=False, nogil=True)
def jvp_rows(Z, s2, W3, h2, V3, Rz1, d1, u2, Rmu):
    """The fused row loop: u2 = s2 ⊙ Z, Rμ = u2 W3 + h̃2 Ṽ3 + Rz1 · δ1_j (M, A)."""
    M, H2 = Z.shape
    for m in range(M):
        for j in range(W3.shape[1]):
            acc = V3[H2, j]
            for l in range(H2):
                u2[m, l] = s2[m, l] * Z[m, l]
                acc += u2[m, l] * W3[l, j] + h2[m, l] * V3[l, j]
            for k in range(Rz1.shape[1]):
                acc += Rz1[m, k] * d1[j, m, k]
            Rmu[m, j] = acc


@njit(cache=False, nogil=True)
def vjp_rows(r, d, W3, V3, s2, d1, x, h2, Rdz2, G1, G3):
    """The fused row loop: R{dz2} = s2 ⊙ (r W3ᵀ + d V3ᵀ), G̃1 = x̃ᵀ Σ_j r_j δ1_j, G̃3 = h̃2ᵀ r
    (the sums over M accumulated row by row, their inner loops over H free to vectorise)."""
    M, H2 = s2.shape
    G1[:] = 0.0
    G3[:] = 0.0
    dz1 = np.empty(d1.shape[2])
    for m in range(M):
        for l in range(H2):
            acc = 0.0
            for j in range(r.shape[1]):
                acc += r[m, j] * W3[l, j] + d[m, j] * V3[l, j]
            Rdz2[m, l] = s2[m, l] * acc
        dz1[:] = 0.0
        for j in range(r.shape[1]):
            for k in range(dz1.shape[0]):
                dz1[k] += r[m, j] * d1[j, m, k]
        for i in range(x.shape[1]):
            for k in range(dz1.shape[0]):
                G1[i, k] += x[m, i] * dz1[k]
        for j in range(r.shape[1]):
            for l in range(H2 + 1):
                G3[l, j] += h2[m, l] * r[m, j]


def cpu_ms(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        out.append(1e3 * (time.thread_time() - t0))
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    single_blas_thread()
    keep_freed_memory()
    rng = np.random.default_rng(0)
    policy = mamlnp.GaussianPolicy((2, 100, 100, 2), "relu")
    theta = policy.init(0) + 0.05 * rng.standard_normal(policy.num_params)
    M = a.steps
    task = (rng.uniform(-0.5, 0.5, (M, 2)), rng.normal(0, 1, (M, 2)), rng.normal(0, 1, M), None)
    post = (rng.uniform(-0.5, 0.5, (M, 2)), rng.normal(0, 1, (M, 2)), rng.normal(0, 1, M), None)
    c, v = task[2] / M, rng.standard_normal(policy.num_params)
    coeffs = rl.score_coefficients("lvc", c, None)
    pt, fp = PolicyPoint(policy, theta, *task[:2]), FactoredPoint(policy, theta, *task[:2])
    pt.vjp(c), fp.vjp(c), fp.factorize()
    V1, V2, V3 = fp._blocks(v)
    Z, Rz1 = fp.h1 @ V2, fp.x @ V1
    Rdz2 = fp.s2 * (fp.h1 @ V2)
    u2, Rmu = np.empty_like(Z), np.empty((M, 2))

    def numpy_rows():
        u = fp.s2 * Z
        return u @ fp.W3 + fp.h2 @ V3 + np.einsum("mk,jmk->mj", Rz1, fp.d1)

    r, d = rng.standard_normal((M, 2)), fp._bp[1][0]
    W3, V3w = np.ascontiguousarray(fp.W3), np.ascontiguousarray(V3[:-1])
    Rdz2_, G1, G3 = np.empty((M, 100)), np.empty((3, 100)), np.empty((101, 2))

    def numpy_vjp_rows():
        return (fp._rdz2(r, d, V3), fp.x.T @ np.einsum("mj,jmk->mk", r, fp.d1), fp.h2.T @ r)

    def point(factorize):
        q = FactoredPoint(policy, theta, *task[:2])
        q.vjp(c)
        return q.factorize() if factorize else q

    rows = [("product h̃1 Ṽ2", lambda: fp.h1 @ V2),
            ("product h̃1ᵀ R{dz2}", lambda: fp.h1.T @ Rdz2),
            ("HVP lvc, factored", lambda: fp.hvp(v, coeffs)),
            ("HVP lvc, R-pass", lambda: pt.hvp(v, coeffs)),
            ("Fisher product, factored", lambda: fp.fisher_vp(v)),
            ("Fisher product, R-pass", lambda: pt.fisher_vp(v)),
            ("pre point (forward, vjp)", lambda: point(False)),
            ("pre point + factorize()", lambda: point(True)),
            ("meta-gradient lvc, written out", lambda: rl._task_meta_gradient(
                policy, theta, task, post, 0.5, "lvc", FactoredPoint)),
            ("meta-gradient lvc, R-pass", lambda: rl._task_meta_gradient(
                policy, theta, task, post, 0.5, "lvc", PolicyPoint)),
            ("JVP rows, NumPy", numpy_rows),
            ("JVP rows, Numba fused", lambda: jvp_rows(Z, fp.s2, fp.W3, fp.h2, V3, Rz1, fp.d1,
                                                       u2, Rmu)),
            ("VJP rows, NumPy", numpy_vjp_rows),
            ("VJP rows, Numba fused", lambda: vjp_rows(r, d, W3, V3w, fp.s2, fp.d1, fp.x, fp.h2,
                                                       Rdz2_, G1, G3))]
    unit = cpu_ms(rows[0][1], a.repeats)
    print(f"one task, M = {M}, CPU ms (median of {a.repeats}); unit = one product h̃1 Ṽ2 "
          f"= {unit:.3f} ms")
    for name, fn in rows:
        ms = cpu_ms(fn, a.repeats)
        print(f"  {name:<34} {ms:8.3f} ms  {ms / unit:6.2f} units")
    ref = numpy_vjp_rows()
    diff = max(np.abs(numpy_rows() - Rmu).max(), *(np.abs(a - b).max() / np.abs(a).max()
                                                  for a, b in zip(ref, (Rdz2_, G1, G3))))
    print(f"  fused rows agree with NumPy's: max rel. diff {diff:.1e}")


if __name__ == "__main__":
    main()
