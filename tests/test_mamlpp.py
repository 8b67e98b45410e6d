"""MAML++ (mamlnp.meta.mamlpp): LSLR's per-layer, per-step step-size gradient and the MSL
meta-loss with the paper's annealed weights, against finite differences.

Dimension legend: T tasks, K support, Q query, P parameters, L layers, s = inner_steps.
"""
import numpy as np
import pytest

from mamlnp import InputError, MLP
from mamlnp.check import familycheck as FC
from mamlnp.check.fdcheck import rel_error
from mamlnp.check.gradcheck import draw_meta_case
from mamlnp.meta import maml, mamlpp as PP


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("s,epoch", [(1, 0), (3, 2), (4, 30)])
def test_theta_and_lslr_gradients_match_fd(activation, batch_norm, s, epoch):
    model, theta, batch = draw_meta_case(0, activation, batch_norm=batch_norm)
    rows = FC.check_mamlpp(model, theta, batch, s, epoch, eps=1e-6 if batch_norm else 1e-5)
    print("\n" + "\n".join(f"{r.label}: rel {r.rel_err:.1e}" for r in rows))
    assert rows[0].rel_err <= 1e-6 and rows[1].rel_err <= 1e-6
    assert rows[2].rel_err > 1e-4                     # first order drops the HVP terms


def test_constant_lslr_and_last_step_weight_is_maml():
    model, theta, batch = draw_meta_case(0, "tanh")
    loss, g, g_a = PP.mamlpp_gradient(model, theta, batch, np.full((3, 3), 0.1))
    want = maml.meta_gradient(model, theta, batch, 0.1, 3, backend="numpy")
    assert loss == want[0] and rel_error(g, want[1]) < 1e-15
    _, _, ga_sgd = maml.meta_gradient_alpha(model, theta, batch, 0.1, 3)
    assert abs(g_a.sum() - ga_sgd) < 1e-12 * abs(ga_sgd)   # Meta-SGD's scalar α: the sum


def test_first_order_is_the_weighted_sum_of_query_gradients_at_the_iterates():
    model, theta, batch = draw_meta_case(1, "softplus")
    lslr, w = np.full((2, 3), 0.1), np.array([0.3, 0.7])
    _, g, _ = PP.mamlpp_gradient(model, theta, batch, lslr, w, first_order=True)
    want = np.zeros(model.num_params)
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        thetas = maml.inner_loop(model, theta, xs, ys, 0.1, 2)
        want += sum(w[k - 1] * model._loss_and_grad(thetas[k], xq, yq)[1] for k in (1, 2))
    assert rel_error(g, want / batch.num_tasks) < 1e-14


def test_msl_weights_follow_the_annealing():
    s, n = 5, 10
    w0, w5, w_end = (PP.msl_weights(s, e, n) for e in (0, 5, 100))
    assert np.allclose(w0, 0.2) and np.allclose(w5, [0.1] * 4 + [0.6])
    assert np.allclose(w_end, [0.006] * 4 + [0.976])
    for e in range(0, 40):
        w = PP.msl_weights(s, e, n)
        assert abs(w.sum() - 1) < 1e-12 and np.all(w[:-1] >= 0.006 - 1e-15)
    assert np.array_equal(PP.msl_weights(1, 7, n), [1.0])


def test_layer_index_covers_every_parameter():
    for bn in (False, True):
        model = MLP((2, 5, 4, 1), "tanh", batch_norm=bn)
        idx = PP.layer_index(model)
        assert idx.shape == (model.num_params,) and set(idx) == {0, 1, 2}
        assert np.all(np.diff(idx) >= 0)              # layer-contiguous in θ


def test_bad_input_names_the_argument():
    model, theta, batch = draw_meta_case(0, "tanh")
    with pytest.raises(InputError, match="^lslr:"):
        PP.mamlpp_gradient(model, theta, batch, np.full((2, 4), 0.1))
    with pytest.raises(InputError, match="^lslr:"):
        PP.mamlpp_gradient(model, theta, batch, np.full((2, 3), np.nan))
    with pytest.raises(InputError, match="^weights:"):
        PP.mamlpp_gradient(model, theta, batch, np.full((2, 3), 0.1), np.ones(3))
    with pytest.raises(InputError, match="^msl_epochs:"):
        PP.msl_weights(3, 0, 0)
    with pytest.raises(InputError, match="^epoch:"):
        PP.msl_weights(3, -1, 5)
