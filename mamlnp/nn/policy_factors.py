"""The Gaussian policy with two hidden ReLU layers: its passes written out, and its products
through cached Jacobian factors.

Dimension legend: M samples, D observation entries, H1, H2 hidden units, A action entries,
P_μ mean-network parameters; i ∈ 0…D runs over the entries of x̃ = [x, 1], j over actions,
k over H1, l over H2.

``FactoredPoint`` is a ``PolicyPoint`` (mamlnp/nn/policy.py: same log π, scores, vjp, jvp,
hvp, fisher_vp, to rounding) for sizes (D, H1, H2, A), activation ReLU. Every layer is one
product z = h̃ W̃ with h̃ = [h, 1] and W̃ = [W; b] (exactly θ's block layout), the ReLU
masks s1 = 1[z1 > 0], s2 = 1[z2 > 0] are kept, and since σ″ = 0 the R-pass has no σ″ terms:

    forward     z1 = x̃ W̃1,  h1 = s1 ⊙ z1,  z2 = h̃1 W̃2,  h2 = s2 ⊙ z2,  μ = h̃2 W̃3
    backprop    G̃3 = h̃2ᵀ d, dz2 = s2 ⊙ d W3ᵀ, G̃2 = h̃1ᵀ dz2, dz1 = s1 ⊙ dz2 W2ᵀ, G̃1 = x̃ᵀ dz1
    R-forward   Rh1 = s1 ⊙ x̃ Ṽ1,  Rh2 = s2 ⊙ (Rh1 W2 + h̃1 Ṽ2),  Rμ = Rh2 W3 + h̃2 Ṽ3
    R-backward  (d = c ⊙ d_μ, r = R{d} from ``PolicyPoint._output_r``)
                G̃3 = h̃2ᵀ r + [Rh2ᵀ d; 0],  R{dz2} = s2 ⊙ (r W3ᵀ + d V3ᵀ),
                G̃2 = h̃1ᵀ R{dz2} + [Rh1ᵀ dz2; 0],  G̃1 = x̃ᵀ (s1 ⊙ (R{dz2} W2ᵀ + dz2 V2ᵀ))

(six (M × H × H) products per HVP, four per Fisher product). Every (M, ·) array is kept
transposed, (·, M) C-ordered (OpenBLAS runs W̃ᵀ h̃ᵀ and W dzᵀ ~25 % faster than h̃ W̃ and
dz Wᵀ at M = 2000, H = 100), and each pair Rh1 W2 + h̃1 Ṽ2, R{dz2} W2ᵀ + dz2 V2ᵀ is one
product over rows stacked in place ([h̃1ᵀ; Rh1ᵀ], [R{dz2}ᵀ; dz2ᵀ]). A meta-TRPO conjugate-gradient
solve multiplies ~30 times at ONE point; ``factorize()`` then computes, once, every product
whose two factors stay fixed, and an HVP or Fisher product pays two: h̃1 Ṽ2 and h̃1ᵀ (·):

    δ2_j = s2 ⊙ W3_jᵀ = ∂μ_j/∂z2 (M, H2),    δ1_j = s1 ⊙ (δ2_j W2ᵀ) = ∂μ_j/∂z1 (M, H1)
    JVP   Rμ_j = (x̃ Ṽ1)·δ1_j + (h̃1 Ṽ2)·δ2_j + h̃2 Ṽ3_j                    (row-wise dots)
    VJP   Jᵀy:  G̃3 = h̃2ᵀ y,  G̃2 = h̃1ᵀ (Σ_j y_j δ2_j),  G̃1 = x̃ᵀ (Σ_j y_j δ1_j)
    K[i, j] = (s1 ⊙ x̃_i)ᵀ (s2 ⊙ d_j)   (H1, H2),     C[i] = Σ_j K[i, j] ⊙ W3_jᵀ  (H1, H2)
    Rh1ᵀ dz2 = Σ_i Ṽ1_i ⊙ C[i]
    (s2 ⊙ Rh1 W2)ᵀ d = [Σ_{i,k} Ṽ1_ik W2_kl K[i,j]_kl]_{l,j}
    x̃ᵀ(s1 ⊙ dz2 V2ᵀ) = [Σ_l V2_kl C[i]_kl]_{i,k}
    x̃ᵀ(s1 ⊙ (s2 ⊙ d V3ᵀ) W2ᵀ) = [Σ_{j,l} W2_kl V3_lj K[i,j]_kl]_{i,k}
    x̃ᵀ(s1 ⊙ (s2 ⊙ r W3ᵀ) W2ᵀ) = x̃ᵀ Σ_j r_j δ1_j

Set-up: A products for δ1, (D+1)·A for K (only on a point with vjp weights c). Tested
against ``PolicyPoint`` (tests/test_policy_factors.py); derivation:
docs/derivations/policy-gradient.md.
"""
import numpy as np

from ..errors import InputError
from ..validation import check_memory
from . import policy_ops
from .policy import PolicyPoint

THIN = 8        # a layer with at most THIN inputs (x̃: D + 1) runs its product in ``ops``


def factors_apply(policy):
    """True when ``FactoredPoint`` serves the policy: two hidden layers, ReLU."""
    return len(policy.sizes) == 4 and policy.activation == "relu"


def _side(V, W):
    """[Ṽᵀ, Wᵀ] (N, 2H+1) for Ṽ (H+1, N), W (H, N): [Ṽᵀ, Wᵀ] [h̃ᵀ; R{h}ᵀ] = Ṽᵀ h̃ᵀ + Wᵀ R{h}ᵀ,
    the two products of the R-forward as one (~12 % faster at M = 2000, H = 100)."""
    return np.concatenate([V.T, W.T], axis=1)


class FactoredPoint(PolicyPoint):
    """A ``PolicyPoint`` of a (D, H1, H2, A) ReLU policy: lean passes, Jacobian factors.
    Its (M, ·) arrays are kept transposed, (·, M) C-ordered (names ending in T): OpenBLAS
    runs W̃ᵀ h̃ᵀ and W dzᵀ about 25 % faster than h̃ W̃ and dz Wᵀ at M = 2000, H = 100.
    Its row passes (the ReLU and its mask, σ′ on the backward and R-passes, the thin
    products fused with them) are ``ops``: mamlnp/nn/policy_ops.py here, their compiled
    twins in ``mamlnp.fast.policy.CompiledPoint``."""

    ops = policy_ops

    def _mean_forward(self, phi, obs):
        D, H1, H2, _ = self.policy.sizes
        o1 = (D + 1) * H1
        self.cuts = (o1, o1 + (H1 + 1) * H2, self.policy.num_mean_params)
        W1, W2, W3 = self._blocks(phi)                                     # W̃1, W̃2, W̃3
        self.W2, self.W3 = W2[:H1], W3[:H2]                                # (H1, H2), (H2, A)
        self.xT = np.empty((D + 1, obs.shape[0]))
        self.xT[:D], self.xT[D] = obs.T, 1.0                               # x̃ᵀ (D+1, M)
        self.h1w, self.s1T = self._relu_layer(W1, self.xT)                 # (2H1+1, M), (H1, M)
        self.h2w, self.s2T = self._relu_layer(W2, self.h1w[:H1 + 1])       # (2H2+1, M), (H2, M)
        self.h1T, self.h2T = self.h1w[:H1 + 1], self.h2w[:H2 + 1]          # h̃1ᵀ, h̃2ᵀ (views)
        self.caches, self.d1T, self.K = None, None, None
        return (W3.T @ self.h2T).T                                         # μ (M, A)

    def _relu_layer(self, W, hT):
        """(h̃′ᵀ = [max(W̃ᵀ h̃ᵀ, 0); 1; ·] (2H+1, M), sᵀ = 1[W̃ᵀ h̃ᵀ > 0] (H, M) bool) of a
        layer W̃ (I+1, H) on h̃ᵀ (I+1, M); the last H rows are left for the R-pass's R{h}ᵀ
        (``_rforward``). A thin layer (I+1 ≤ THIN) is one fused pass (``ops.product_relu``),
        a wide one a BLAS product, then ``ops.relu_rows``."""
        H, M = W.shape[1], hT.shape[1]
        out, s = np.empty((2 * H + 1, M)), np.empty((H, M), dtype=bool)
        if W.shape[0] <= THIN:
            self.ops.product_relu(np.ascontiguousarray(W.T), hT, out, s)
        else:
            np.matmul(W.T, hT, out=out[:H])                                # zᵀ = W̃ᵀ h̃ᵀ (H, M)
            self.ops.relu_rows(out, s)
        return out, s

    def _scores(self, actions):
        """``PolicyPoint._scores`` on (A, M) rows (long rows for NumPy's loops, not rows of
        A); d_μ, d_ρ are (M, A) views of them."""
        deltaT = np.ascontiguousarray(actions.T) - self.mu.T               # δᵀ (A, M)
        d_muT = deltaT * self.inv_var[:, None]                             # ∂ log π/∂μ
        ddT = deltaT * d_muT                                               # δ² e^{−2ρ} (A, M)
        self.d_mu, self.d_rho = d_muT.T, (ddT - 1.0).T                     # (M, A) views
        self._set_log_prob(ddT.sum(axis=0))

    def _output_r(self, Rmu, v, score_coeffs=None):
        """``PolicyPoint._output_r`` on (A, M) rows: (R{c ⊙ d_μ} (+ e ⊙ d_μ) (M, A), ρ block)."""
        c, RmuT = self._bp[0], Rmu.T                                       # (M,), (A, M)
        vr = v[self.policy.num_mean_params:, None]                         # v_ρ (A, 1)
        d_muT, d_rhoT = self.d_mu.T, self.d_rho.T                          # (A, M)
        RdT = -self.inv_var[:, None] * RmuT - 2.0 * d_muT * vr
        RdT *= c                                                           # R{c ⊙ d_μ}ᵀ (A, M)
        out_rho = (-2.0 * d_muT * RmuT - 2.0 * (d_rhoT + 1.0) * vr) @ c     # (A,)
        if score_coeffs is not None:
            e = score_coeffs((d_muT * RmuT).sum(axis=0) + vr[:, 0] @ d_rhoT)   # (M,)
            RdT += e * d_muT
            out_rho += d_rhoT @ e
        return RdT.T, out_rho

    def _blocks(self, v):
        """Ṽ1 (D+1, H1), Ṽ2 (H1+1, H2), Ṽ3 (H2+1, A): views into v (P_μ,) or (P,)."""
        o1, o2, o3 = self.cuts
        H1, H2 = self.policy.sizes[1:3]
        return (v[:o1].reshape(-1, H1), v[o1:o2].reshape(H1 + 1, H2),
                v[o2:o3].reshape(H2 + 1, -1))

    def _backprop(self, d, out):
        """J_μᵀ d into out (P_μ,); returns the deltas (d (M, A), [·; dz2ᵀ] (2H2, M)): dz2ᵀ
        in the last H2 rows, the first left for the HVP's R{dz2}ᵀ (``hvp``)."""
        G1, G2, G3 = self._blocks(out)
        H2 = self.W2.shape[1]
        G3[:] = self.h2T @ d                                               # (H2+1, A)
        dzw = np.empty((2 * H2, d.shape[0]))
        dz2T = dzw[H2:]
        self.ops.product_mask(self.W3, np.ascontiguousarray(d.T), self.s2T, dz2T)  # (H2, M)
        G2[:] = self.h1T @ dz2T.T                                          # (H1+1, H2)
        dz1T = self.W2 @ dz2T
        self.ops.mask_rows(dz1T, self.s1T)                                 # (H1, M)
        G1[:] = self.xT @ dz1T.T                                           # (D+1, H1)
        return d, dzw

    # ---- the Jacobian factors ------------------------------------------------------------

    def factorize(self, cross=True):
        """Compute δ1 and, after ``vjp(c)`` and with ``cross``, K and C (see the module
        docstring: δ1 serves the Fisher product, K and C the HVP); -> self."""
        (D1, M), (H1, H2), A = self.xT.shape, self.W2.shape, self.W3.shape[1]
        check_memory("obs", (M, D1 - 1), 8 * M * (A * H1 + D1 * H1 + A * H2),
                     "the Jacobian factors δ1 (A, M, H1) and K's (M, (D+1)·H1), (M, A·H2)")
        if self.d1T is None:
            self.d1T = np.stack([self.s1T * (self.W2 @ (self.s2T * w[:, None]))
                                 for w in self.W3.T])                      # δ1ᵀ (A, H1, M)
        if cross and self._bp is not None and self.K is None:
            dT = self._bp[1][0].T                                          # (c ⊙ d_μ)ᵀ (A, M)
            sx = (self.xT[:, None, :] * self.s1T[None]).reshape(-1, M)     # s1 ⊙ x̃_i (3H1, M)
            sd = (dT[:, None, :] * self.s2T[None]).reshape(-1, M)          # s2 ⊙ d_j (A·H2, M)
            K = (sx @ sd.T).reshape(D1, H1, A, H2)                         # one product
            self.K = np.ascontiguousarray(K.transpose(0, 2, 1, 3))         # (D+1, A, H1, H2)
            self.C = np.einsum("ijkl,lj->ikl", self.K, self.W3)            # (D+1, H1, H2)
        return self

    def _jvp_factored(self, V1, V2, V3):
        """(Rμ = J_μ v_φ (M, A), (s2 ⊙ h̃1 Ṽ2)ᵀ (H2, M)) through δ1."""
        u2T = V2.T @ self.h1T                                              # (H2, M): a product
        self.ops.mask_rows(u2T, self.s2T)                                  # in place
        RmuT = self.W3.T @ u2T + V3.T @ self.h2T                           # (A, M)
        RmuT += np.einsum("km,jkm->jm", V1.T @ self.xT, self.d1T)          # (x̃ Ṽ1) · δ1_j
        return RmuT.T, u2T

    def _vjp_factored(self, y, dz2T, out):
        """Jᵀ y into out (P_μ,) through δ1, given dz2ᵀ = (s2 ⊙ y W3ᵀ)ᵀ (H2, M): the blocks."""
        G1, G2, G3 = self._blocks(out)
        G3[:] = self.h2T @ y                                               # (H2+1, A)
        G2[:] = self.h1T @ dz2T.T                                          # (H1+1, H2): a product
        G1[:] = self.xT @ np.einsum("mj,jkm->km", y, self.d1T).T           # (D+1, H1)
        return G1, G2, G3

    # ---- the products -------------------------------------------------------------------

    def _rforward(self, v):
        """(Ṽ blocks, Rμ (M, A), (Rh1ᵀ (H1, M), Rh2ᵀ (H2, M))): the R-forward, written out,
        Rh1ᵀ and Rh2ᵀ into the last rows of h̃1w, h̃2w (scratch: the next R-pass rewrites them)."""
        V1, V2, V3 = V = self._blocks(v)
        H1, H2 = self.W2.shape
        Rh1T = self.h1w[H1 + 1:]
        self.ops.product_mask(np.ascontiguousarray(V1.T), self.xT, self.s1T, Rh1T)  # (H1, M)
        Rh2T = np.matmul(_side(V2, self.W2), self.h1w, out=self.h2w[H2 + 1:])
        self.ops.mask_rows(Rh2T, self.s2T)                                 # s2 ⊙ (h̃1 Ṽ2 + Rh1 W2)
        return V, (_side(V3, self.W3) @ self.h2w).T, (Rh1T, Rh2T)         # Rμ = h̃2 Ṽ3 + Rh2 W3

    def fisher_vp(self, v):
        """F v = (1/M) Σ_m [J_μᵀ (e^{−2ρ} ⊙ Rμ) ; 2 v_ρ] through δ1 (``PolicyPoint.fisher_vp``)."""
        Pm = self.cuts[2]
        Rmu = self.factorize(cross=False)._jvp_factored(*self._blocks(v))[0]   # δ1 only
        y = Rmu * (self.inv_var / Rmu.shape[0])                            # (M, A)
        out = np.empty(v.shape)
        dz2T = np.empty(self.s2T.shape)
        self.ops.product_mask(self.W3, np.ascontiguousarray(y.T), self.s2T, dz2T)  # (H2, M)
        self._vjp_factored(y, dz2T, out)
        out[Pm:] = 2.0 * v[Pm:]
        return out

    def hvp(self, v, score_coeffs=None):
        """Σ_m c_m ∇² log π_m v (+ Σ_m e_m ∇ log π_m, e = score_coeffs(q)): ``PolicyPoint.hvp``,
        through the factors after ``factorize()``, else the R-pass written out."""
        if self._bp is None:
            raise InputError("hvp: call vjp(c) first (the HVP is of Σ c_m log π_m)")
        if self.K is not None:
            return self._hvp_factored(v, score_coeffs)
        d, dzw = self._bp[1]                                               # [·; dz2ᵀ] (2H2, M)
        H2 = self.W2.shape[1]
        (V1, V2, V3), Rmu, (Rh1T, Rh2T) = self._rforward(v)
        out = np.empty(v.shape)
        r, out[self.cuts[2]:] = self._output_r(Rmu, v, score_coeffs)       # (M, A), (A,)
        G1, G2, G3 = self._blocks(out)
        G3[:] = self.h2T @ r
        G3[:-1] += Rh2T @ d                                                # (H2+1, A)
        Rdz2T = self._rdz2(r, d, V3, dzw[:H2])                             # into dzw's first rows
        G2[:] = self.h1T @ Rdz2T.T
        G2[:-1] += Rh1T @ dzw[H2:].T                                       # (H1+1, H2)
        Rdz1T = np.concatenate([self.W2, V2[:-1]], axis=1) @ dzw           # W2 R{dz2}ᵀ + V2 dz2ᵀ
        self.ops.mask_rows(Rdz1T, self.s1T)                                # R{dz1}ᵀ (H1, M)
        G1[:] = self.xT @ Rdz1T.T                                          # (D+1, H1)
        return out

    def _rdz2(self, r, d, V3, out=None):
        """R{dz2}ᵀ = (s2 ⊙ (r W3ᵀ + d V3ᵀ))ᵀ (H2, M), as one product [W3, V3] [r, d]ᵀ."""
        Rdz2T = np.empty(self.s2T.shape) if out is None else out
        self.ops.product_mask(np.concatenate([self.W3, V3[:-1]], axis=1),
                              np.concatenate([r.T, d.T]), self.s2T, Rdz2T)
        return Rdz2T

    def _hvp_factored(self, v, score_coeffs):
        V1, V2, V3 = self._blocks(v)
        Rmu, u2T = self._jvp_factored(V1, V2, V3)
        out = np.empty(v.shape)
        r, out[self.cuts[2]:] = self._output_r(Rmu, v, score_coeffs)       # (M, A), (A,)
        d = self._bp[1][0]
        G1, G2, G3 = self._vjp_factored(r, self._rdz2(r, d, V3), out)
        K, C, W2 = self.K, self.C, self.W2
        G3[:-1] += u2T @ d + np.einsum("ik,kl,ijkl->lj", V1, W2, K)        # Rh2ᵀ d
        G2[:-1] += np.einsum("ik,ikl->kl", V1, C)                          # Rh1ᵀ dz2
        G1 += np.einsum("kl,ikl->ik", V2[:-1], C)                          # x̃ᵀ(s1 ⊙ dz2 V2ᵀ)
        G1 += np.einsum("kl,lj,ijkl->ik", W2, V3[:-1], K)                  # x̃ᵀ(s1⊙(s2⊙dV3ᵀ)W2ᵀ)
        return out
