"""``python -m mamlnp negative-lr``: MAML's test loss on mixed linear regression, the closed
form beside the measurement, over a grid of training (or test) inner steps.

Dimension legend: G grid points, R runs per point.

Bernacchia (2021), "Meta-learning with negative learning rates", Fig. 2 settings by default
(mamlnp/meta/closed_form.py, docs/derivations/negative-learning-rates.md). Each row prints
the closed form (2)-(3), its exact value (the training inputs sampled, everything else
integrated analytically; ± its standard error), and the measured mean test loss ± its 95 %
CI over R runs of MAML trained on m fresh tasks with mamlnp.meta_gradient and tested on
new tasks. The runs share their tasks across the grid, so the paired difference between
the best grid point and α = 0 is printed too.
"""
import numpy as np

from ..errors import InputError
from ..meta import closed_form as cf
from ..validation import as_float64, check_memory, nonneg_int, positive_int

PANELS = {"train": "alpha_t", "adapt": "alpha_r"}
DEFAULT_GRID = {"train": "-2,-1.5,-1,-0.5,0,0.25,0.5,0.75,1",
                "adapt": "-0.2,-0.1,0,0.1,0.2,0.3,0.4"}


def add_arguments(p):
    p.add_argument("--panel", choices=tuple(PANELS), default="train",
                   help="train: sweep the training step α_t at fixed α_r (the paper's Fig. 2b, "
                        "default); adapt: sweep the test step α_r at fixed α_t (Fig. 2a)")
    p.add_argument("--grid", default=None,
                   help="comma-separated steps to sweep, written --grid=-1,0,0.5 when the first is "
                        "negative (default: train "
                        f"{DEFAULT_GRID['train']}; adapt {DEFAULT_GRID['adapt']})")
    p.add_argument("--fixed", type=float, default=0.2,
                   help="the other step, held fixed (default 0.2, as in the paper)")
    p.add_argument("--runs", type=int, default=1000,
                   help="independent runs per grid point (default 1000, as in Fig. 2b)")
    p.add_argument("--seed", type=int, default=0, help="seed of the runs (default 0)")
    p.add_argument("--draws", type=int, default=4000,
                   help="draws of the training inputs for the exact column (default 4000)")


def parse_grid(text):
    """'a,b,c' -> a finite float64 array (G,); InputError naming --grid otherwise."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise InputError(f"--grid: expected comma-separated numbers, got {text!r}") from None
    return as_float64("--grid", values, 1)


def table(s, panel, grid, fixed, runs, seed, draws):
    """Rows (step, closed form, exact, exact s.e., measured mean, CI half-width) (G, 6) and
    the measured losses (G, R)."""
    at, ar = (grid, fixed) if panel == "train" else (fixed, grid)
    at, ar = np.broadcast_arrays(np.asarray(at, float), np.asarray(ar, float))
    losses = cf.measure(s, at, ar, runs, seed)                          # (G, R)
    mean, half = cf.summary(losses)
    exact = {a: cf.trained_error_exact(a, s, np.random.default_rng([seed, 7]), draws)
             for a in np.unique(at)}
    rows = [(g, float(cf.expected_test_loss(a, r, s)),
             float(cf.test_loss_of_init(exact[a][0], r, s)),
             float(cf.adaptation_factor(r, s.n_r, s.p)) * 0.5 * exact[a][1], m, h)
            for g, a, r, m, h in zip(grid, at, ar, mean, half)]
    return np.array(rows), losses


def run(args):
    s = cf.Setting.figure2()
    panel = args.panel
    grid = parse_grid(args.grid or DEFAULT_GRID[panel])
    fixed = float(as_float64("--fixed", args.fixed, 0))
    runs = positive_int("--runs", args.runs)
    if runs < 2:
        raise InputError(f"--runs: expected at least 2 runs (a CI needs two), got {runs}")
    seed = nonneg_int("--seed", args.seed)
    draws = positive_int("--draws", args.draws)
    check_memory("--runs", runs, 8 * grid.size * runs, "a test loss per run and grid point")
    check_memory("--draws", draws, 16 * draws, "a trace per draw")
    other = "alpha_r" if panel == "train" else "alpha_t"
    figure = "2b" if panel == "train" else "2a"
    print(f"MAML on mixed linear regression (Bernacchia 2021, Fig. {figure}): "
          f"p={s.p}, n_t={s.n_t}, n_v={s.n_v}, n_r={s.n_r}, m={s.m}, sigma={s.sigma:g}, "
          f"nu={s.nu:g}, w0=omega0=0, {other}={fixed:g}")
    print(f"measured: {runs} runs per point (seed {seed}), each tested on 100 new tasks of "
          f"{s.n_r}+50 points; exact: {draws} draws of the training inputs")
    rows, losses = table(s, panel, grid, fixed, runs, seed, draws)
    print(f"{PANELS[panel]:>8}  closed form  exact (± s.e.)      measured ± 95% CI   in CI")
    for g, c, e, se, m, h in rows:
        print(f"{g:8.3f}  {c:11.4f}  {e:.4f} ± {se:.4f}    {m:.4f} ± {h:.4f}     "
              f"{'yes' if abs(m - c) <= h else 'no'}")
    best = int(np.argmin(rows[:, 4]))
    if panel == "train":
        print(f"optimal alpha_t of the closed form: {cf.optimal_training_step(s):.4f}")
    else:
        print(f"optimal alpha_r of the closed form: {cf.optimal_test_step(fixed, s):.4f}")
    print(f"lowest measured grid point: {PANELS[panel]} = {grid[best]:g}")
    zero = np.flatnonzero(grid == 0.0)
    if zero.size and best != zero[0]:
        d, h = cf.summary(losses[best] - losses[zero[0]])
        print(f"paired difference L({grid[best]:g}) - L(0) = {d[0]:.4f} ± {h[0]:.4f} (95% CI)")
    return 0
