"""Two-parameter models and tasks: MAML you can draw (notebooks/01).

Dimension legend: N points, T tasks, K support points, Q query points,
P = 2 parameters θ = (a, b), n the number of distinct toy tasks.

Two models, both implementing the *model protocol* of mamlnp.meta.maml
(``num_params``, ``sizes``, ``check_theta``, ``check_xy``, ``_loss_value``,
``_loss_and_grad``, ``_hvp``), so ``mamlnp.meta_gradient`` and
``mamlnp.meta_loss`` run on them unchanged:

    LinearToy   f_θ(x) = a·x + b             (the same function as MLP(sizes=(1, 1)))
    TanhToy     f_θ(x) = a·tanh(b·x)         (nonlinear in b)

With the mean squared error  L(θ) = (1/N) Σ_n r_n²,  r_n = f_θ(x_n) − y_n,  and
J_n = ∂f_θ(x_n)/∂θ (2,), F_n = ∂²f_θ(x_n)/∂θ² (2, 2), every derivative is

    ∇L  = (2/N) Σ_n r_n J_n                                          (2,)
    ∇²L = (2/N) Σ_n ( J_n J_nᵀ  +  r_n F_n )                         (2, 2)
          Gauss-Newton term   residual-curvature term

For LinearToy F_n = 0, so each task's loss is exactly quadratic and the MAML
optimum has a closed form (:func:`maml_optimum_quadratic`). For TanhToy the
Hessian changes with θ, and MAML's initialisation differs from the
joint-training (average-loss) minimiser (notebooks/01).

Finn, Abbeel & Levine (2017), arXiv:1703.03400, Algorithm 2.
"""
import numpy as np

from ..validation import as_float64


class TwoParameterModel:
    """Base class: a scalar model f_θ(x), θ = (a, b), trained with the MSE.

    Subclasses define ``_features(theta, x) -> (f (N,), J (N, 2), F (N, 2, 2))``.
    """

    sizes = (1, 1)          # one input, one output (the protocol's D and O)
    num_params = 2
    param_names = ("a", "b")

    def __repr__(self):
        return f"{type(self).__name__}()"

    # ---- argument checks (model protocol) ----------------------------------------

    def check_theta(self, theta, name="theta"):
        return as_float64(name, theta, 1, (2,))

    def check_xy(self, x, y=None, xname="x", yname="y"):
        x = as_float64(xname, x, 2, (None, 1))
        if y is None:
            return x
        return x, as_float64(yname, y, 2, (x.shape[0], 1))

    # ---- public, checked ---------------------------------------------------------

    def forward(self, theta, x):
        """ŷ = f_θ(x):  x (N, 1) -> ŷ (N, 1)."""
        return self._features(self.check_theta(theta), self.check_xy(x))[0][:, None]

    def loss(self, theta, x, y):
        """L(θ) = (1/N) Σ_n (f_θ(x_n) − y_n)², a float."""
        return self._loss_value(self.check_theta(theta), *self.check_xy(x, y))

    def loss_and_grad(self, theta, x, y):
        """(L, ∇L (2,))."""
        return self._loss_and_grad(self.check_theta(theta), *self.check_xy(x, y))

    def hessian(self, theta, x, y):
        """∇²L (2, 2), exact."""
        return self._hessian(self.check_theta(theta), *self.check_xy(x, y))

    def hvp(self, theta, x, y, v):
        """∇²L · v (2,)."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        return self._hvp(theta, x, y, self.check_theta(v, name="v"))

    # ---- unchecked (model protocol) ----------------------------------------------

    def _loss_value(self, theta, x, y):
        f, _, _ = self._features(theta, x)
        r = f - y[:, 0]                                      # (N,)
        return float(np.mean(r * r))

    def _loss_and_grad(self, theta, x, y):
        f, J, _ = self._features(theta, x)
        r = f - y[:, 0]                                      # (N,)
        return float(np.mean(r * r)), (2.0 / r.size) * (J.T @ r)     # (2,)

    def _hessian(self, theta, x, y):
        f, J, F = self._features(theta, x)
        r = f - y[:, 0]                                      # (N,)
        gauss_newton = J.T @ J                               # (2, 2)
        residual = np.einsum("n,nij->ij", r, F)              # (2, 2)
        return (2.0 / r.size) * (gauss_newton + residual)

    def _hvp(self, theta, x, y, v):
        return self._hessian(theta, x, y) @ v                # (2,)


class LinearToy(TwoParameterModel):
    """f_θ(x) = a·x + b.  J_n = (x_n, 1), F_n = 0: every task loss is quadratic in θ.

    Same function and parameter order as ``mamlnp.MLP(sizes=(1, 1))`` (θ = [W | b]).
    """

    def _features(self, theta, x):
        a, b = theta
        x = x[:, 0]                                          # (N,)
        J = np.stack([x, np.ones_like(x)], axis=1)           # (N, 2)
        return a * x + b, J, np.zeros((x.size, 2, 2))


class TanhToy(TwoParameterModel):
    """f_θ(x) = a·tanh(b·x).  With t = tanh(b x) and s = 1 − t² (= sech²):

        ∂f/∂a = t          ∂f/∂b = a x s
        ∂²f/∂a² = 0        ∂²f/∂a∂b = x s        ∂²f/∂b² = −2 a x² t s
    """

    def _features(self, theta, x):
        a, b = theta
        x = x[:, 0]                                          # (N,)
        t = np.tanh(b * x)                                   # (N,)
        s = 1.0 - t * t                                      # (N,) sech²(b x)
        J = np.stack([t, a * x * s], axis=1)                 # (N, 2)
        F = np.zeros((x.size, 2, 2))
        F[:, 0, 1] = F[:, 1, 0] = x * s
        F[:, 1, 1] = -2.0 * a * x * x * t * s
        return a * t, J, F
