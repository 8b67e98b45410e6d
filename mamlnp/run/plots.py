"""The paper's sinusoid figures (Finn, Abbeel & Levine 2017, Figures 2 and 3).

Dimension legend: T tasks, K support points (shots), G grid points, S = max_steps.

* ``figure2``: one held-out task, for each method and each K: the true curve,
  the K support points, and the predictions f_{θ_k}(x) after k = 0 (pre-update),
  1 and 10 SGD steps of size α on the support points.
* ``figure3``: query MSE (mean ± 95% CI band, over the pool's tasks) against the
  number of SGD steps 0 … S, one panel per K, one line per method.

Both return the matplotlib Figure and, given ``path``, save it as PNG. The Agg
backend is used when there is no display (matplotlib's own fallback), so the
figures also render in CI and in notebooks.
"""
import io
import os

import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg by itself
import numpy as np

from ..meta.maml import inner_loop

COLORS = ["tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink"]


SMOKE_NOTE = "SMOKE TEST (--quick): a few iterations, NOT a result"


def figure_bytes(fig, fmt="png", note=None):
    """The figure rendered to bytes (then closed); ``note`` (e.g. SMOKE_NOTE) goes on top in
    red, so a smoke test's figure cannot pass for a result."""
    if note:
        old = fig._suptitle.get_text() if fig._suptitle is not None else ""
        fig.suptitle(note + ("\n" + old if old else ""), color="tab:red", fontsize=10)
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format=fmt)
    plt.close(fig)
    return buf.getvalue()


def _finish(fig, path, note=None):
    if path is not None:                    # atomically, never through a planted symlink
        from .checkpoint import atomic_write, make_output_dir
        make_output_dir(os.path.dirname(os.path.abspath(path)))
        data = figure_bytes(fig, os.path.splitext(path)[1][1:] or "png", note)
        atomic_write(path, lambda f: f.write(data))
    return fig


def figure2(methods, pool, shots=(5, 10), task=0, steps=(0, 1, 10), path=None, note=None):
    """Figure 2: fits to one held-out task before and after adaptation.

    methods: list of (label, model, θ, alpha_by_K) with alpha_by_K a dict
    {K: α} (α a float or a (P,) learned vector). pool: an EvaluationPool;
    ``task`` indexes its tasks. One row per method, one column per K.
    """
    grid = np.linspace(*pool.family.x_range, 200)[:, None]                  # (G, 1)
    truth = pool.family.targets(pool.params[task:task + 1], grid[None])[0]  # (G, 1)
    nrows, ncols = len(methods), len(shots)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows),
                             squeeze=False, sharex=True, sharey=True)
    shades = np.linspace(0.35, 1.0, len(steps))
    for i, (label, model, theta, alphas) in enumerate(methods):
        cmap = plt.get_cmap("Greens" if i == 0 else ["Blues", "Oranges", "Purples"][(i - 1) % 3])
        for j, k in enumerate(shots):
            ax = axes[i, j]
            xs, ys = pool.support[k][0][task], pool.support[k][1][task]      # (K, 1) each
            ax.plot(grid[:, 0], truth[:, 0], color="tab:red", lw=2, label="ground truth")
            with np.errstate(all="ignore"):
                thetas = inner_loop(model, theta, xs, ys, alphas[k], max(steps))
            for s, shade in zip(steps, shades):
                name = "pre-update" if s == 0 else f"{s} grad step" + ("s" if s > 1 else "")
                ax.plot(grid[:, 0], model.forward(thetas[s], grid)[:, 0], ls="--",
                        color=cmap(shade), lw=1.6, label=name)
            ax.plot(xs[:, 0], ys[:, 0], "^", color="purple", ms=7, label="used for grad")
            a = alphas[k]
            step = f"α={a:g}" if np.ndim(a) == 0 else "learned α"
            ax.set_title(f"{label}, K={k}, {step}", fontsize=10)
            ax.grid(alpha=0.3)
            if i == nrows - 1:
                ax.set_xlabel("x")
            if j == 0:
                ax.set_ylabel("y")
        axes[i, -1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Few-shot adaptation to held-out task {task} "
                 f"(A={pool.params[task, 0]:.2f}, φ={pool.params[task, 1]:.2f})")
    fig.tight_layout()
    return _finish(fig, path, note)


def figure3(results, shots=(5, 10), path=None, note=None):
    """Figure 3: query MSE (mean ± 95% CI) against SGD steps, per K, per method.

    results: EvalResult objects from mamlnp.run.evaluate.evaluate. The caption of
    each panel states how many tasks diverged, if any (they are not in the mean).
    """
    shots = [k for k in shots if any(k in r.curves for r in results)]
    fig, axes = plt.subplots(1, len(shots), figsize=(5.0 * len(shots), 3.8), squeeze=False)
    for j, k in enumerate(shots):
        ax = axes[0, j]
        notes = []
        for i, res in enumerate(results):
            if k not in res.curves:
                continue
            rows = [res.row(k, s) for s in range(res.max_steps + 1)]
            steps = np.arange(len(rows))
            mean = np.array([r["mean"] for r in rows])
            ci = np.array([r["ci95"] for r in rows])
            a = res.alpha[k]
            step = f"α={a:g}" if np.ndim(a) == 0 else "learned α"
            color = COLORS[i % len(COLORS)]
            ax.plot(steps, mean, "o-", color=color, ms=4, label=f"{res.label} ({step})")
            ax.fill_between(steps, mean - ci, mean + ci, color=color, alpha=0.25)
            div = max(r["diverged"] for r in rows)
            if div:
                notes.append(f"{res.label}: ≤{div} diverged task(s) excluded")
        ax.set_title(f"K={k}-shot regression")
        ax.set_xlabel("number of gradient steps")
        ax.set_ylabel("query MSE (mean ± 95% CI)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if notes:
            ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=7)
    fig.tight_layout()
    return _finish(fig, path, note)


def illustrative_task(pool):
    """The first pool task with amplitude in [2, 4] (a readable Figure 2), else task 0."""
    from ..tasks.sinusoid import SinusoidTasks
    if isinstance(pool.family, SinusoidTasks):
        ok = np.flatnonzero((pool.params[:, 0] >= 2.0) & (pool.params[:, 0] <= 4.0))
        if ok.size:
            return int(ok[0])
    return 0


def save_all(runs, out_dir, pool=None, task=None, note=None):
    """Figures 2 and 3 for runs = [(EvalResult, model, θ), …]; returns the PNG paths.

    ``task`` (Figure 2's held-out task) defaults to ``illustrative_task(pool)``; ``note``
    (SMOKE_NOTE for ``reproduce --quick``) is printed on top of both.
    """
    from ..tasks.pool import EvaluationPool
    from ..tasks.sinusoid import SinusoidTasks
    pool = EvaluationPool(SinusoidTasks()) if pool is None else pool
    task = illustrative_task(pool) if task is None else task
    shots = [k for k in (5, 10) if all(k in res.alpha for res, _, _ in runs)]
    if not shots:
        shots = sorted(runs[0][0].alpha)[:2]
    steps = tuple(s for s in (0, 1, 10) if s <= runs[0][0].max_steps) or (0,)
    p2, p3 = os.path.join(out_dir, "figure2.png"), os.path.join(out_dir, "figure3.png")
    figure2([(res.label, m, th, res.alpha) for res, m, th in runs], pool, shots, task,
            steps, path=p2, note=note)
    figure3([res for res, _, _ in runs], shots=sorted(runs[0][0].curves), path=p3, note=note)
    return [p2, p3]
