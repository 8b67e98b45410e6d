"""Meta-learning methods as small objects the trainer drives the same way.

Dimension legend: T tasks, K support points, Q query points, D inputs,
O outputs, P parameters, s = inner_steps.

Every method provides

    init_params(model, theta, config) -> {"theta": θ (P,), …}   the meta-learned arrays
    step(model, params, batch, config, backend) -> (meta_loss, {name: gradient (P,)})
    adapt_alpha(params, config) -> α used to fine-tune at test time (scalar or (P,))

and the trainer hands each gradient to the outer optimizer of its array (Adam
with step β by default). ``config`` holds "alpha", "inner_steps", "first_order", and for
maml / fomaml "inner_bn" (absent: "adapt"), see ``inner_alpha``.

Methods
  maml      Finn et al. (2017): exact second-order meta-gradient (mamlnp.meta.maml.meta_gradient).
  fomaml    the same with first_order=True (Hessian terms dropped).
  reptile   Nichol, Achiam & Schulman (2018), "On First-Order Meta-Learning Algorithms".
  metasgd   Li, Zhou, Chen & Li (2017), "Meta-SGD": a learned step size per parameter.
  pretrain  the paper's baseline: one network trained on all tasks jointly (sec. 5.1).
  imaml     Rajeswaran et al. (2019): proximal inner loop, implicit meta-gradient by CG
            (mamlnp.meta.imaml; config keys "lam", "cg_steps").
  anil      Raghu et al. (2020): MAML with only the head adapted (mamlnp.meta.anil).
  mamlpp    Antoniou et al. (2019), MAML++: learned per-step, per-layer steps (LSLR), the
            annealed multi-step loss, derivative-order annealing (mamlnp.meta.mamlpp;
            config keys "epoch_length", "msl_epochs", "fo_epochs").

A method whose step depends on training time (MAML++'s annealing) reads the iteration the
trainer passes to ``step_at``.
"""
import numpy as np

from . import anil as A, imaml as I, maml as M, mamlpp as PP
from ..errors import InputError
from ..tasks.base import TaskBatch
from ..validation import choice

METHODS = ("maml", "fomaml", "reptile", "metasgd", "pretrain", "imaml", "anil", "mamlpp")
INNER_BN = ("adapt", "fixed")       # config["inner_bn"]: batch norm's γ, β in the inner loop or not
INNER_BN_METHODS = ("maml", "fomaml")   # the methods "fixed" applies to


def bn_mask(model):
    """m (P,): 0 on the γ and β of every batch-norm layer (``model.bn_layout``: the ConvNet's
    blocks, a batch-norm MLP's hidden layers), 1 on every other parameter."""
    mask = np.ones(model.num_params)
    for bn in getattr(model, "bn_layout", ()):
        if bn is not None:
            (g0, g1), (e0, e1) = bn                                     # γ_l, β_l
            mask[g0:g1] = mask[e0:e1] = 0.0
    return mask


def inner_alpha(model, alpha, inner_bn="adapt"):
    """The step of a MAML run's inner loop: the scalar α ("adapt": every parameter adapts), or
    with ``inner_bn="fixed"`` the vector α·m (P,), m = ``bn_mask(model)``, so that

        θ_{k+1} = θ_k − (α m) ⊙ ∇L_S(θ_k)

    leaves every batch-norm γ, β at θ's value: they are learned by the outer optimizer only,
    as in cbfinn/maml, whose ``tf.contrib.layers.batch_norm`` keeps its offset outside the
    ``weights`` the inner step updates (docs/derivations/meta-gradient.md)."""
    if choice("inner_bn", inner_bn, INNER_BN) == "adapt":
        return alpha
    if not getattr(model, "batch_norm", False):
        raise InputError(f"inner_bn: 'fixed' needs a model with batch norm (the ConvNet, or an "
                         f"MLP with batch_norm=True), got {model!r:.80}")
    return float(alpha) * bn_mask(model)                                # (P,)


class Method:
    """Interface (see the module docstring). ``name`` is the config's "method"."""

    name = None
    groups = ("theta",)            # the meta-learned arrays, in params

    def init_params(self, model, theta, config):
        return {"theta": np.array(theta, dtype=np.float64)}

    def step(self, model, params, batch, config, backend):
        raise NotImplementedError

    def step_at(self, iteration, model, params, batch, config, backend):
        """``step`` at meta-iteration ``iteration`` (0-based; only MAML++ reads it)."""
        return self.step(model, params, batch, config, backend)

    def adapt_alpha(self, params, config):
        return config["alpha"]


class MAML(Method):
    """∇_θ (1/T) Σ_t L_Q,t(θ_s^{(t)}), exact through the s inner steps (Hessian-vector
    products), or first order (``first_order=True``: ∇L_Q(θ_s) only)."""

    name = "maml"
    first_order = False

    def step(self, model, params, batch, config, backend):
        alpha = self._alpha(model, config)                          # α, or α m (P,)
        fast = M.kernels_for(model, backend, "meta_gradient_unchecked", alpha)
        if fast is not None:
            return self._step_numba(fast, params["theta"], batch, config, alpha)
        loss, g = M.meta_gradient(model, params["theta"], batch, alpha,
                                  config["inner_steps"], self.first_order, backend)
        return loss, {"theta": g}

    def _step_numba(self, fast, theta, batch, config, alpha):
        """The trainer's hot path: the kernel set's unchecked entry, skipping the argument
        checks of mamlnp.meta.maml.meta_gradient (the trainer made θ and the batch itself);
        ``alpha`` a float or the (P,) vector of ``inner_alpha``."""
        T = batch.num_tasks
        flat = [a.reshape(T, -1) for a in (batch.x_support, batch.y_support,      # (T, K·D) …
                                           batch.x_query, batch.y_query)]
        loss, g = fast.meta_gradient_unchecked(theta, *flat, alpha, config["inner_steps"],
                                               self.first_order)
        return float(loss), {"theta": g}

    @staticmethod
    def _alpha(model, config):
        """``inner_alpha`` of the run: float(α), or α m (P,) with config["inner_bn"] "fixed"."""
        return inner_alpha(model, float(config["alpha"]), config.get("inner_bn", "adapt"))

    def adapt_alpha(self, params, config):
        """The step the run adapts with at validation and test: the training step (masked off
        batch norm's γ, β with inner_bn "fixed")."""
        if config.get("inner_bn", "adapt") == "adapt":
            return config["alpha"]
        from ..nn.spec import model_from_spec
        return self._alpha(model_from_spec(config["model"]), config)


class FOMAML(MAML):
    name = "fomaml"
    first_order = True


class Reptile(Method):
    """Reptile (Nichol et al. 2018, Algorithm 2, batched version).

    Per task t, run s plain SGD steps of size α from θ on ALL the task's points,
    support ∪ query (K+Q points: Reptile has no train/test split inside a task,
    so it uses every sampled point as training data):

        θ̃_t = θ_s^{(t)},   θ_{k+1} = θ_k − α ∇L_{S∪Q,t}(θ_k)

    The meta "gradient" handed to the outer optimizer is  g = θ − (1/T) Σ_t θ̃_t  (P,).
    With outer SGD of step ε this is Reptile's θ ← θ + ε ((1/T) Σ_t θ̃_t − θ); the
    trainer's default outer optimizer is Adam with step β, as for every method
    (choose ``optimizer="sgd"`` for the paper's plain update). s = 0 gives g = 0.

    meta_loss reported: (1/T) Σ_t L_{S∪Q,t}(θ̃_t), the tasks' loss after adaptation.
    """

    name = "reptile"

    def step(self, model, params, batch, config, backend):
        theta = params["theta"]
        x = np.concatenate([batch.x_support, batch.x_query], axis=1)      # (T, K+Q, D)
        y = np.concatenate([batch.y_support, batch.y_query], axis=1)      # (T, K+Q, O)
        alpha, s = config["alpha"], config["inner_steps"]
        fast = M.kernels_for(model, backend, "adapt_batch", alpha)
        if fast is not None:
            adapted = fast.adapt_batch(theta, unchecked_batch(x, y, x, y), alpha, s)
        else:
            adapted = [M.final_iterate(model, theta, x[t], y[t], alpha, s)      # θ̃_t (P,)
                       for t in range(batch.num_tasks)]
        mean_adapted, loss = np.zeros_like(theta), 0.0
        for t in range(batch.num_tasks):
            mean_adapted += adapted[t]
            loss += model._loss_value(adapted[t], x[t], y[t])
        T = batch.num_tasks
        return loss / T, {"theta": theta - mean_adapted / T}              # θ − mean θ̃


class MetaSGD(Method):
    """Meta-SGD (Li et al. 2017): θ and a per-parameter step size α (P,) are both
    meta-learned; adaptation is θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k).

    α starts at config["alpha"] everywhere. Gradients w.r.t. θ and α are those of
    mamlnp.meta.maml.meta_gradient_alpha (derivation in its docstring); α is left
    unconstrained, as in the paper, so entries may change sign during training.
    """

    name = "metasgd"
    groups = ("theta", "alpha")

    def init_params(self, model, theta, config):
        return {"theta": np.array(theta, dtype=np.float64),
                "alpha": np.full(model.num_params, float(config["alpha"]))}

    def step(self, model, params, batch, config, backend):
        theta, alpha = params["theta"], params["alpha"]
        s, fo = config["inner_steps"], bool(config.get("first_order", False))
        fast = M.kernels_for(model, backend, "meta_gradient_alpha", alpha)
        if fast is not None:
            loss, g_theta, g_alpha = fast.meta_gradient_alpha(theta, batch, alpha, s, fo)
            return loss, {"theta": g_theta, "alpha": g_alpha}
        # NumPy reference, unchecked: the learned α may hold entries <= 0, which the
        # public meta_gradient_alpha (for user input) refuses.
        loss, g_theta, g_alpha = 0.0, np.zeros_like(theta), np.zeros_like(alpha)
        for t in range(batch.num_tasks):
            l, gt, ga = M.task_meta_gradient_alpha(model, theta, *batch.task(t), alpha, s, fo)
            loss, g_theta, g_alpha = loss + l, g_theta + gt, g_alpha + ga
        T = batch.num_tasks
        return loss / T, {"theta": g_theta / T, "alpha": g_alpha / T}

    def adapt_alpha(self, params, config):
        return params["alpha"]


class Pretrain(Method):
    """The paper's baseline, "pretrained on all of the tasks" (Finn et al. 2017, sec. 5.1):
    one network fitted to every task's points at θ, with no inner step:

        L(θ) = (1/T) Σ_t MSE_t(θ; support ∪ query)

    Every task has K+Q points, so this is one MSE over all T(K+Q) points, and its
    gradient is one backward pass (``model._loss_and_grad``). At test time the
    network is fine-tuned with SGD at α, like MAML.

    backend="numba": the same loss is MAML's meta-objective with s = 0 inner steps and
    support ∪ query as the query set (the mean of T equal-sized per-task means is the
    mean over all points), so the compiled meta-gradient kernel computes it, in a
    different summation order (equal to ~1e-15, tests/test_variants.py).
    """

    name = "pretrain"

    def step(self, model, params, batch, config, backend):
        T, K, D = batch.x_support.shape
        x = np.concatenate([batch.x_support, batch.x_query], axis=1)      # (T, K+Q, D)
        y = np.concatenate([batch.y_support, batch.y_query], axis=1)      # (T, K+Q, O)
        fast = M.kernels_for(model, backend, "meta_gradient_unchecked")
        if fast is not None and not getattr(model, "batch_norm", False):
            # (batch norm: one batch of all T(K+Q) points is not T per-task batches)
            xf, yf = x.reshape(T, -1), y.reshape(T, -1)                    # (T, (K+Q)·D) …
            loss, g = fast.meta_gradient_unchecked(params["theta"], xf, yf, xf, yf,
                                                   float(config["alpha"]), 0, True)  # α unused
            return float(loss), {"theta": g}
        loss, g = model._loss_and_grad(params["theta"], x.reshape(-1, D),
                                       y.reshape(T * x.shape[1], -1))
        return loss, {"theta": g}


class IMAML(Method):
    """iMAML (Rajeswaran et al. 2019): φ_s of the proximal inner loop, the implicit gradient
    (1/T) Σ_t (I + H_S,t(φ_s)/λ)⁻¹ ∇L_Q,t(φ_s) by config["cg_steps"] CG steps
    (mamlnp.meta.imaml; NumPy on every backend: there are no iMAML kernels)."""

    name = "imaml"

    def step(self, model, params, batch, config, backend):
        loss, g = I.imaml_unchecked(model, params["theta"], batch, config["alpha"],
                                    config["inner_steps"], config["lam"], config["cg_steps"],
                                    I.CG_TOL)
        return loss, {"theta": g}


class ANIL(Method):
    """ANIL (Raghu et al. 2020): MAML's exact meta-gradient with α masked to the head
    (mamlnp.meta.anil); adaptation at test time uses the same masked α."""

    name = "anil"

    def step(self, model, params, batch, config, backend):
        loss, g = A.anil_gradient(model, params["theta"], batch, config["alpha"],
                                  config["inner_steps"], False, backend)
        return loss, {"theta": g}

    def adapt_alpha(self, params, config):
        from ..nn.mlp import MLP
        return A.anil_alpha(MLP(**config["model"]), config["alpha"])


class MAMLPP(Method):
    """MAML++ (Antoniou, Edwards & Storkey 2019): θ and the LSLR steps α_{k,l} (stored flat,
    (s·L,), starting at config["alpha"]) are meta-learned on the multi-step loss
    (mamlnp.meta.mamlpp). Epoch e = iteration // config["epoch_length"] sets the MSL weights
    (annealed for config["msl_epochs"] epochs) and the order (first while e <
    config["fo_epochs"]). NumPy on every backend: there are no MAML++ kernels."""

    name = "mamlpp"
    groups = ("theta", "lslr")

    def init_params(self, model, theta, config):
        return {"theta": np.array(theta, dtype=np.float64),
                "lslr": np.full(config["inner_steps"] * len(model.layout), float(config["alpha"]))}

    def step(self, model, params, batch, config, backend):
        return self.step_at(0, model, params, batch, config, backend)

    def step_at(self, iteration, model, params, batch, config, backend):
        s, L = config["inner_steps"], len(model.layout)
        weights, fo = PP.schedule(iteration // config["epoch_length"], s,
                                  config["msl_epochs"], config["fo_epochs"])
        loss, g_theta, g_lslr = PP.mamlpp_unchecked(model, params["theta"], batch,
                                                    params["lslr"].reshape(s, L), weights, fo)
        return loss, {"theta": g_theta, "lslr": g_lslr.ravel()}

    def adapt_alpha(self, params, config):
        from ..nn.mlp import MLP
        return PP.expand(MLP(**config["model"]), params["lslr"])          # (s, P)


def run_alpha(config, model=None, alpha=None):
    """The step size a trained run adapts with, as it adapted in training: Meta-SGD's learned
    vector (P,), MAML++'s learned per-step table (s, P), ANIL's α masked to the head (P,),
    a MAML run's α masked off batch norm's γ, β when config["inner_bn"] is "fixed" (P,)
    (the last three need the run's ``model``), else the scalar α. ``alpha`` (``evaluate
    --alpha``) replaces the run's step; a scalar is masked off γ, β as in training."""
    fixed = config.get("inner_bn", "adapt") == "fixed"
    if (config.get("method") in ("anil", "mamlpp") or fixed) and model is None:
        raise InputError(f"run_alpha: a {config['method']} run"
                         f"{' with inner_bn fixed' if fixed else ''} adapts with a "
                         f"per-parameter step: pass its model (mamlnp.load_checkpoint gives it)")
    if alpha is not None:
        return inner_alpha(model, alpha, "fixed") if fixed and np.ndim(alpha) == 0 else alpha
    if config.get("learned_alpha") is not None:
        return np.asarray(config["learned_alpha"], dtype=np.float64)
    if config.get("learned_lslr") is not None:
        return PP.expand(model, config["learned_lslr"])                    # (s, P)
    if config.get("method") == "anil":
        return A.anil_alpha(model, float(config["alpha"]))                # (P,)
    if fixed:
        return inner_alpha(model, float(config["alpha"]), "fixed")         # α m (P,)
    return float(config["alpha"])


def unchecked_batch(x_support, y_support, x_query, y_query):
    """A TaskBatch of arrays the caller guarantees (float64, finite, matching shapes),
    made C-contiguous but not re-validated: for the training loop's own data."""
    batch = object.__new__(TaskBatch)                      # bypasses TaskBatch.__post_init__
    for name, a in (("x_support", x_support), ("y_support", y_support),
                    ("x_query", x_query), ("y_query", y_query)):
        object.__setattr__(batch, name, np.ascontiguousarray(a, dtype=np.float64))
    return batch


_REGISTRY = {cls.name: cls for cls in (MAML, FOMAML, Reptile, MetaSGD, Pretrain, IMAML, ANIL,
                                        MAMLPP)}


def get_method(name):
    """The method object for ``name`` (one of METHODS)."""
    return _REGISTRY[choice("method", name, METHODS)]()
