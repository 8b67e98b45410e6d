"""A linear model without bias, f_ω(x) = xᵀω, with the half mean squared error.

Dimension legend: N points, p inputs = P parameters (ω ∈ ℝ^p), O = 1 output.

This is the model of Bernacchia (2021), "Meta-learning with negative learning rates"
(ICLR 2021, arXiv:2102.00940), on mixed linear regression: no hidden layer and no
bias, so ``MLP(sizes=(p, 1))`` (which has a bias) is a different model. With the data
X (N, p), y (N,) and the residual r = Xω − y (N,):

    L(ω)  = (1/2N) ‖Xω − y‖²  =  (1/2N) Σ_n r_n²                     a float
    ∇L    = (1/N) Xᵀ r                                                (p,)
    ∇²L   = H = (1/N) XᵀX          (the same for every ω)              (p, p)
    ∇²L v = (1/N) Xᵀ (X v)                                            (p,)

The ½ (this project's convention for this model; mamlnp.nn.losses.mse has none) makes the
inner step the textbook one, ω' = ω − α ∇L = (I − αH) ω + (α/N) Xᵀ y,
whose factor (I − αH) the closed form (mamlnp/meta/closed_form.py) averages. The loss
is quadratic in ω, so MAML's meta-loss is too: its minimiser is a linear solve.

It implements the *model protocol* of mamlnp.meta.maml (``num_params``, ``sizes``,
``check_theta``, ``check_xy``, ``_loss_value``, ``_loss_and_grad``, ``_hvp``), so
``mamlnp.meta_gradient`` runs on it unchanged. Derivation:
docs/derivations/negative-learning-rates.md.
"""
import numpy as np

from ..validation import as_float64, positive_int


class LinearRegression:
    """f_ω(x) = xᵀω with ω (p,), trained on L(ω) = (1/2N) ‖Xω − y‖²."""

    def __init__(self, p):
        self.p = positive_int("p", p)
        self.sizes = (self.p, 1)        # the protocol's D and O
        self.num_params = self.p

    def __repr__(self):
        return f"LinearRegression(p={self.p})"

    # ---- argument checks (model protocol) ----------------------------------------

    def check_theta(self, theta, name="theta"):
        return as_float64(name, theta, 1, (self.p,))

    def check_xy(self, x, y=None, xname="x", yname="y"):
        x = as_float64(xname, x, 2, (None, self.p))
        if y is None:
            return x
        return x, as_float64(yname, y, 2, (x.shape[0], 1))

    # ---- public, checked ---------------------------------------------------------

    def forward(self, theta, x):
        """ŷ = X ω:  x (N, p) -> ŷ (N, 1)."""
        return (self.check_xy(x) @ self.check_theta(theta))[:, None]

    def loss(self, theta, x, y):
        """L(ω) = (1/2N) ‖Xω − y‖², a float."""
        return self._loss_value(self.check_theta(theta), *self.check_xy(x, y))

    def loss_and_grad(self, theta, x, y):
        """(L, ∇L (p,))."""
        return self._loss_and_grad(self.check_theta(theta), *self.check_xy(x, y))

    def hvp(self, theta, x, y, v):
        """∇²L · v = (1/N) Xᵀ X v (p,); the same at every θ."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        return self._hvp(theta, x, y, self.check_theta(v, name="v"))

    # ---- unchecked (model protocol) ----------------------------------------------

    def _loss_value(self, theta, x, y):
        r = x @ theta - y[:, 0]                              # (N,) residual
        return 0.5 * float(r @ r) / r.size

    def _loss_and_grad(self, theta, x, y):
        r = x @ theta - y[:, 0]                              # (N,)
        return 0.5 * float(r @ r) / r.size, (x.T @ r) / r.size          # (p,)

    def _hvp(self, theta, x, y, v):
        return (x.T @ (x @ v)) / x.shape[0]                  # (p,)  H v, H = XᵀX / N
