"""MAML in closed form on mixed linear regression (Bernacchia 2021): the linear model's
derivatives against finite differences, the exact pieces of the closed form against
sampling, MAML's trained initialisation against the pseudo-inverse, and the measured test
loss against the formula within its 95 % CI. Fixed seeds; a few seconds in all.
"""
import numpy as np
import pytest

import mamlnp
from mamlnp.errors import InputError
from mamlnp.meta import closed_form as cf
from mamlnp.meta.maml import meta_loss
from mamlnp.meta.optim import SGD
from mamlnp.nn.linear import LinearRegression
from mamlnp.tasks.linear import MixedLinearTasks

FIG2 = cf.Setting.figure2()


def small_case(seed, p=7, n=5):
    rng = np.random.default_rng(seed)
    return (LinearRegression(p), rng.standard_normal(p), rng.standard_normal((n, p)),
            rng.standard_normal((n, 1)), rng.standard_normal(p))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_gradient_and_hvp_match_finite_differences(fd, seed):
    model, theta, x, y, v = small_case(seed)
    loss, g = model.loss_and_grad(theta, x, y)
    err_g = fd.rel_error(g, fd.num_grad(lambda t: model.loss(t, x, y), theta))
    hv = model.hvp(theta, x, y, v)
    err_h = fd.rel_error(hv, fd.num_dir(lambda t: model.loss_and_grad(t, x, y)[1], theta, v))
    print(f"linear model: grad rel. error {err_g:.1e}, HVP rel. error {err_h:.1e}")
    assert err_g < 1e-8 and err_h < 1e-8
    assert loss == pytest.approx(0.5 * np.mean((x @ theta - y[:, 0]) ** 2), rel=1e-14)
    u = np.random.default_rng(seed + 10).standard_normal(theta.size)
    assert u @ model.hvp(theta, x, y, v) == pytest.approx(v @ model.hvp(theta, x, y, u),
                                                          rel=1e-12)     # H symmetric


@pytest.mark.parametrize("alpha_t", [-1.0, 0.0, 0.4])
def test_meta_gradient_on_the_linear_model_matches_finite_differences(fd, alpha_t):
    model = LinearRegression(6)
    batch = MixedLinearTasks(6, 0.5, 1.0).sample(3, 3, 4, 2)
    alpha = np.full(6, alpha_t)                      # the vector form takes any sign
    theta = np.random.default_rng(4).standard_normal(6)
    _, g = mamlnp.meta_gradient(model, theta, batch, alpha, 1, backend="numpy")
    num = fd.num_grad(lambda t: meta_loss(model, t, batch, alpha, 1), theta)
    err = fd.rel_error(g, num)
    print(f"meta-gradient at alpha_t = {alpha_t}: rel. error {err:.1e}")
    assert err < 1e-8


def test_mixed_linear_tasks_draw_the_stated_distribution():
    family = MixedLinearTasks(30, 0.5, 1.0, w0=np.full(30, 0.1))
    batch, w = family.sample_with_params(11, 4000, 3, 2)
    spread = np.sum((w - 0.1) ** 2, axis=1)                              # ‖w − w0‖² ≈ ν²
    resid = batch.y_query[:, :, 0] - np.einsum("tqp,tp->tq", batch.x_query, w)   # the noise
    print(f"‖w − w0‖² {spread.mean():.4f} (0.25), noise var {resid.var():.4f} (1), "
          f"x var {batch.x_support.var():.4f} (1)")
    assert abs(spread.mean() - 0.25) < 4 * spread.std() / np.sqrt(spread.size)
    assert abs(resid.var() - 1.0) < 0.05 and abs(batch.x_support.var() - 1.0) < 0.01
    assert batch.x_support.shape == (4000, 3, 30) and batch.y_query.shape == (4000, 2, 1)


def test_adaptation_factor_is_the_mean_of_the_squared_step_matrix():
    rng, p, n, alpha = np.random.default_rng(5), 12, 8, -0.7
    x = rng.standard_normal((4000, n, p))
    M = np.eye(p) - alpha * (x.transpose(0, 2, 1) @ x) / n               # (draws, p, p)
    vals = np.einsum("dij,dij->d", M, M) / p                            # tr(M²)/p
    se = vals.std(ddof=1) / np.sqrt(vals.size)
    c = cf.adaptation_factor(alpha, n, p)
    print(f"c = {c:.4f}, sampled {vals.mean():.4f} ± {se:.4f}")
    assert abs(vals.mean() - c) < 4 * se


def test_test_loss_of_an_initialisation_matches_sampled_test_tasks():
    s = cf.Setting(p=20, n_t=10, n_v=2, n_r=8, m=3, sigma=0.8, nu=0.6)
    rng = np.random.default_rng(6)
    omega = 0.3 * rng.standard_normal(s.p)
    family, model = MixedLinearTasks(s.p, s.nu, s.sigma), LinearRegression(s.p)
    test = family.sample(rng, 20000, s.n_r, 4)
    losses = cf.adapt_curve_numpy(model, omega, test, np.full(s.p, 0.3), 1)[:, 1]
    se = losses.std(ddof=1) / np.sqrt(losses.size)
    exact = cf.test_loss_of_init(float(omega @ omega), 0.3, s)
    print(f"test loss of a fixed ω: formula {exact:.4f}, sampled {losses.mean():.4f} ± {se:.4f}")
    assert abs(losses.mean() - exact) < 4 * se


@pytest.mark.parametrize("alpha_t", [-1.5, 0.3])
def test_train_maml_reaches_the_pseudo_inverse_solution_and_gradient_descent_agrees(alpha_t):
    s = cf.Setting(p=15, n_t=6, n_v=2, n_r=5, m=3, sigma=1.0, nu=0.5)
    model = LinearRegression(s.p)
    batch = MixedLinearTasks(s.p, s.nu, s.sigma).sample(7, s.m, s.n_t, s.n_v)
    omega0 = np.random.default_rng(8).standard_normal(s.p)
    omega = cf.train_maml(model, batch, alpha_t, omega0)
    A, b = [], []                                    # the meta-loss as ‖Aω − b‖², by hand
    for xs, ys, xq, yq in (batch.task(t) for t in range(s.m)):
        M = np.eye(s.p) - alpha_t * xs.T @ xs / s.n_t
        A.append(xq @ M)
        b.append(yq[:, 0] - alpha_t * xq @ xs.T @ ys[:, 0] / s.n_t)
    A, b = np.vstack(A), np.concatenate(b)
    direct = omega0 + np.linalg.pinv(A) @ (b - A @ omega0)
    err = np.linalg.norm(omega - direct) / np.linalg.norm(direct)
    lam = np.linalg.eigvalsh(A.T @ A / (s.m * s.n_v)).max()              # the meta-Hessian's
    opt, w, alpha = SGD(1.0 / lam), omega0.copy(), np.full(s.p, alpha_t)
    for _ in range(3000):
        w = opt.step(w, mamlnp.meta_gradient(model, w, batch, alpha, 1, backend="numpy")[1])
    err_gd = np.linalg.norm(w - direct) / np.linalg.norm(direct)
    print(f"alpha_t = {alpha_t}: CG vs pinv {err:.1e}, 3000 GD steps vs pinv {err_gd:.1e}")
    assert err < 1e-9 and err_gd < 1e-6


def test_closed_form_is_exact_at_zero_and_within_half_a_percent_elsewhere():
    for alpha_t in (-1.0, 0.0, 0.5):
        exact, se = cf.trained_error_exact(alpha_t, FIG2, 9, draws=1500)
        lead = cf.trained_error(alpha_t, FIG2)
        l_exact = cf.test_loss_of_init(exact, 0.2, FIG2)
        l_lead = cf.expected_test_loss(alpha_t, 0.2, FIG2)
        print(f"alpha_t = {alpha_t:+.1f}: E|ω*−w0|² exact {exact:.4f} ± {se:.4f}, "
              f"closed form {lead:.4f}; test loss {l_exact:.4f} vs {l_lead:.4f}")
        assert abs(l_lead - l_exact) < 0.005 * l_exact
        if alpha_t == 0.0:                   # A's rows standard Gaussian: (3) is exact
            assert abs(lead - exact) < 4 * se


def test_the_optimal_training_step_is_negative_and_a_minimum():
    a = cf.optimal_training_step(FIG2)
    grid = np.linspace(-3.0, 1.5, 4501)
    curve = cf.expected_test_loss(grid, 0.2, FIG2)
    print(f"optimal alpha_t {a:.4f}, grid minimum at {grid[np.argmin(curve)]:.4f}")
    assert a < 0 and abs(grid[np.argmin(curve)] - a) < 1e-3
    assert 0 < cf.optimal_test_step(a, FIG2) < 1


def test_measured_test_loss_agrees_with_the_formula_within_its_ci():
    grid = np.array([-1.0, 0.0, 0.5])
    losses = cf.measure(FIG2, grid, 0.2, runs=120, seed=2021)
    mean, half = cf.summary(losses)
    theory = cf.expected_test_loss(grid, 0.2, FIG2)
    for a, m, h, t in zip(grid, mean, half, theory):
        print(f"alpha_t = {a:+.1f}: measured {m:.4f} ± {h:.4f}, closed form {t:.4f}")
    assert np.all(np.abs(mean - theory) <= half)
    diff, dhalf = cf.summary(losses[0] - losses[1])      # paired: the same tasks
    print(f"L(-1) - L(0) = {diff[0]:.4f} ± {dhalf[0]:.4f}")
    assert diff[0] + dhalf[0] < 0                         # the negative step is better


def test_bad_settings_and_tasks_are_refused():
    with pytest.raises(InputError, match="p: expected p > m"):
        cf.Setting(p=6, n_t=30, n_v=2, n_r=20, m=3, sigma=1.0, nu=0.5)
    with pytest.raises(InputError, match="nu"):
        MixedLinearTasks(5, -1.0, 1.0)
    with pytest.raises(InputError, match="theta"):
        LinearRegression(4).loss(np.zeros(3), np.zeros((2, 4)), np.zeros((2, 1)))
    with pytest.raises(InputError, match="runs"):
        cf.measure(FIG2, 0.0, 0.2, runs=0, seed=0)
    with pytest.raises(InputError, match="alpha_t, alpha_r"):
        cf.measure(FIG2, [0.0, 1.0], [0.2, 0.3, 0.4], runs=2, seed=0)
    with pytest.raises(InputError, match="alpha_t"):
        cf.expected_test_loss(np.nan, 0.2, FIG2)
    with pytest.raises(InputError, match="s: expected"):
        cf.trained_error(0.0, {"p": 60})


def test_negative_lr_command_prints_the_table_and_refuses_bad_input(capsys):
    from mamlnp.run.cli import main
    assert main(["negative-lr", "--grid=-1,0", "--runs", "4", "--draws", "50"]) == 0
    out = capsys.readouterr().out
    assert "closed form" in out and "optimal alpha_t of the closed form: -1.0112" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith(("-1.000", "0.000"))]) == 2
    assert main(["negative-lr", "--grid", "1,x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mamlnp negative-lr: error: --grid: expected comma-separated numbers, got '1,x'")
    assert main(["negative-lr", "--runs", "1"]) == 2
    assert main(["negative-lr", "--grid=-1,nan"]) == 2
    assert main(["negative-lr", "--runs", "2000000000"]) == 2          # refused before allocating
    err = capsys.readouterr().err
    assert "--grid: expected finite values" in err and "--runs: expected a size whose" in err
