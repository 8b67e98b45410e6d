"""The Gaussian policy's products through cached Jacobian factors: two hidden ReLU layers.

Dimension legend: M samples, D observation entries, H1, H2 hidden units, A action entries,
P parameters; i ∈ 0…D runs over the entries of x̃ = [x, 1], j over actions, k over H1,
l over H2.

A meta-TRPO conjugate-gradient solve multiplies by U = I + α Ĥ (pre-update samples) and by
the Fisher F′ (post-update samples) ~20 and ~10 times at ONE θ. The general R-pass
(``PolicyPoint.hvp``, ``fisher_vp``) pays six and four (M × H × H) matrix products per call.
For the navigation policy, sizes (D, H1, H2, A) with D and A tiny and ReLU (σ″ = 0), every
product whose two factors stay fixed during the solve is computed once, and a call pays
two: h̃1 Ṽ2 and h̃1ᵀ R{dz2}. With every layer written z = h̃ W̃ (h̃ = [h, 1], W̃ = [W; b],
exactly θ's block layout), s1 = 1[z1 > 0], s2 = 1[z2 > 0]:

    δ2_j = s2 ⊙ W3_jᵀ = ∂μ_j/∂z2 (M, H2),    δ1_j = s1 ⊙ (δ2_j W2ᵀ) = ∂μ_j/∂z1 (M, H1)
    JVP   Rz1 = x̃ Ṽ1,  Rμ_j = Rz1·δ1_j + (h̃1 Ṽ2)·δ2_j + h̃2 Ṽ3_j       (row-wise dots)
    VJP   Jᵀy:  G̃3 = h̃2ᵀ y,  G̃2 = h̃1ᵀ (Σ_j y_j δ2_j),  G̃1 = x̃ᵀ (Σ_j y_j δ1_j)

For the HVP of Σ_m c_m log π_m (d = c ⊙ d_μ (M, A), the backprop delta; r = R{d} from
``PolicyPoint._output_r``) the R-backward of the ReLU network is

    R{dz2} = s2 ⊙ (r W3ᵀ + d V3ᵀ)                                              (M, H2)
    G̃3 = h̃2ᵀ r + [Rh2ᵀ d; 0],   G̃2 = h̃1ᵀ R{dz2} + [Rh1ᵀ dz2; 0]
    G̃1 = x̃ᵀ (s1 ⊙ (R{dz2} W2ᵀ + dz2 V2ᵀ))

and the terms with a fixed factor on each side go through the (D+1)·A fixed matrices

    K[i, j] = (s1 ⊙ x̃_i)ᵀ (s2 ⊙ d_j)   (H1, H2),     C[i] = Σ_j K[i, j] ⊙ W3_jᵀ  (H1, H2)
    Rh1ᵀ dz2 = Σ_i Ṽ1_i ⊙ C[i]          (Rh1 = s1 ⊙ Rz1, dz2 = s2 ⊙ d W3ᵀ)
    (s2 ⊙ Rh1 W2)ᵀ d = [Σ_{i,k} Ṽ1_ik W2_kl K[i,j]_kl]_{l, j}
    x̃ᵀ (s1 ⊙ dz2 V2ᵀ) = [Σ_l V2_kl C[i]_kl]_{i, k}
    x̃ᵀ (s1 ⊙ (s2 ⊙ d V3ᵀ) W2ᵀ) = [Σ_{j,l} W2_kl V3_lj K[i,j]_kl]_{i, k}
    x̃ᵀ (s1 ⊙ (s2 ⊙ r W3ᵀ) W2ᵀ) = x̃ᵀ Σ_j r_j δ1_j

Set-up: A products for δ1 (and (D+1)·A for K on a point with weights c). Same results as
the general R-pass to rounding (tests/test_policy.py); derivation:
docs/derivations/policy-gradient.md.
"""
import numpy as np

from ..errors import InputError


def factors_apply(policy):
    """True when the Jacobian-factor products hold: two hidden layers, ReLU."""
    return len(policy.sizes) == 4 and policy.activation == "relu"


def _ones_column(h):
    """h̃ = [h, 1]: (M, n) -> (M, n + 1)."""
    return np.concatenate([h, np.ones((h.shape[0], 1))], axis=1)


class FactoredPoint:
    """A ``PolicyPoint`` of a (D, H1, H2, A) ReLU policy with its Jacobian factors cached.

    point : the PolicyPoint (its forward caches; for ``hvp`` its last ``vjp`` weights c).
    """

    def __init__(self, point):
        self.point = pt = point
        policy = pt.policy
        D, H1, H2, A = policy.sizes
        th = pt.theta
        o1, o2 = (D + 1) * H1, (D + 1) * H1 + (H1 + 1) * H2
        self.cuts = (o1, o2, policy.num_mean_params)
        self.W2 = th[o1:o2].reshape(H1 + 1, H2)[:H1]                       # (H1, H2)
        self.W3 = th[o2:self.cuts[2]].reshape(H2 + 1, A)[:H2]              # (H2, A)
        (_, (z1, _)), ((h1, _), (z2, _)), ((h2, _), _) = pt.caches
        self.x = _ones_column(pt.obs)                                      # x̃ (M, D+1)
        self.h1, self.h2 = _ones_column(h1), _ones_column(h2)             # h̃ (M, H+1)
        self.s1, self.s2 = (z1 > 0).astype(float), (z2 > 0).astype(float)  # (M, H)
        self.d1 = np.stack([self.s1 * ((self.s2 * self.W3[:, j]) @ self.W2.T)
                            for j in range(A)])                            # δ1 (A, M, H1)
        self.K = self.C = None
        if pt._bp is not None:
            d = pt._bp[0][:, None] * pt.d_mu                               # d = c ⊙ d_μ (M, A)
            sx = [self.s1 * self.x[:, i:i + 1] for i in range(D + 1)]      # s1 ⊙ x̃_i (M, H1)
            self.K = np.array([[sxi.T @ (self.s2 * d[:, j:j + 1]) for j in range(A)]
                               for sxi in sx])                             # (D+1, A, H1, H2)
            self.C = np.einsum("ijkl,lj->ikl", self.K, self.W3)            # (D+1, H1, H2)
            self.d = d

    def _blocks(self, v):
        """Ṽ1 (D+1, H1), Ṽ2 (H1+1, H2), Ṽ3 (H2+1, A): views into v."""
        o1, o2, o3 = self.cuts
        H1, H2 = self.W2.shape
        return (v[:o1].reshape(-1, H1), v[o1:o2].reshape(H1 + 1, H2),
                v[o2:o3].reshape(H2 + 1, -1))

    def _jvp(self, V1, V2, V3):
        """(Rμ = J_μ v_φ (M, A), Rz1 (M, H1), s2 ⊙ h̃1 Ṽ2 (M, H2))."""
        Rz1 = self.x @ V1                                                  # (M, H1)
        u2 = self.s2 * (self.h1 @ V2)                                      # (M, H2): a product
        Rmu = u2 @ self.W3 + self.h2 @ V3                                  # (M, A)
        Rmu += np.einsum("mk,jmk->mj", Rz1, self.d1)                       # Rz1 · δ1_j
        return Rmu, Rz1, u2

    def _vjp(self, y, dz2, out):
        """Jᵀ y into out[:P_μ] for output weights y (M, A), given dz2 = ∂/∂z2 (M, H2);
        returns the three (h̃ᵀ ·) blocks as views to add to."""
        G1, G2, G3 = self._blocks(out)
        G3[:] = self.h2.T @ y                                              # (H2+1, A)
        G2[:] = self.h1.T @ dz2                                            # (H1+1, H2): a product
        G1[:] = self.x.T @ np.einsum("mj,jmk->mk", y, self.d1)             # (D+1, H1)
        return G1, G2, G3

    def fisher_vp(self, v):
        """F v = (1/M) Σ_m [J_μᵀ (e^{−2ρ} ⊙ Rμ) ; 2 v_ρ]  (``PolicyPoint.fisher_vp``)."""
        pt, Pm = self.point, self.cuts[2]
        Rmu = self._jvp(*self._blocks(v))[0]
        y = Rmu * (pt.inv_var / Rmu.shape[0])                              # (M, A)
        out = np.empty_like(v)
        self._vjp(y, self.s2 * (y @ self.W3.T), out)
        out[Pm:] = 2.0 * v[Pm:]
        return out

    def hvp(self, v, score_coeffs=None):
        """Σ_m c_m ∇² log π_m v (+ Σ_m e_m ∇ log π_m, e = score_coeffs(q)): ``PolicyPoint.hvp``."""
        if self.K is None:
            raise InputError("hvp: build the FactoredPoint after the point's vjp(c) (the HVP "
                             "is of Σ c_m log π_m)")
        V1, V2, V3 = self._blocks(v)
        Rmu, Rz1, u2 = self._jvp(V1, V2, V3)
        out = np.empty_like(v)
        r, out[self.cuts[2]:] = self.point._output_r(Rmu, v, score_coeffs)   # (M, A), (A,)
        Rdz2 = self.s2 * (r @ self.W3.T + self.d @ V3[:-1].T)              # R{dz2} (M, H2)
        G1, G2, G3 = self._vjp(r, Rdz2, out)
        K, C, W2 = self.K, self.C, self.W2
        G3[:-1] += u2.T @ self.d + np.einsum("ik,kl,ijkl->lj", V1, W2, K)   # Rh2ᵀ d
        G2[:-1] += np.einsum("ik,ikl->kl", V1, C)                          # Rh1ᵀ dz2
        G1 += np.einsum("kl,ikl->ik", V2[:-1], C)                          # x̃ᵀ(s1 ⊙ dz2 V2ᵀ)
        G1 += np.einsum("kl,lj,ijkl->ik", W2, V3[:-1], K)                  # x̃ᵀ(s1 ⊙ (s2⊙dV3ᵀ)W2ᵀ)
        return out
