"""The figures of 2D navigation (Finn et al. 2017, Fig. 4): return against adaptation steps,
and the paths of the adapted policies for a few goals.

Dimension legend: G goals, N trajectories, S adaptation steps, H horizon.

Both functions return the matplotlib Figure and, given ``path``, save it as PNG atomically
(never through a symbolic link), as mamlnp/run/plots.py does.
"""
import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg by itself
import numpy as np

from .navigation_eval import LABELS, PAPER
from .plots import COLORS, _finish


def return_curves(results, path=None, paper=True):
    """Average return (mean ± 95 % CI band over goals) against steps 0 … S, one line per row;
    the paper's values dashed beside them."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (row, res) in enumerate(results.items()):
        s = np.array([r["steps"] for r in res["summary"]])
        m = np.array([r["mean"] for r in res["summary"]])
        ci = np.array([r["ci95"] for r in res["summary"]])
        color = COLORS[i % len(COLORS)]
        ax.plot(s, m, "o-", color=color, label=f"{LABELS.get(row, row)} (ours)")
        ax.fill_between(s, m - ci, m + ci, color=color, alpha=0.2)
        if paper and row in PAPER:
            p = PAPER[row]
            ax.plot(np.arange(len(p)), p, "x--", color=color, alpha=0.7,
                    label=f"{LABELS.get(row, row)} (paper)")
    ax.set_xticks(range(max(len(r["summary"]) for r in results.values())))
    ax.set_xlabel("policy-gradient steps at test time")
    ax.set_ylabel("average return")
    ax.set_title("2D navigation: adaptation to a new goal")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return _finish(fig, path)


def trajectory_panels(rows, goal_indices=(0, 1), path=None):
    """The paper's Fig. 4 (bottom): for each goal, one trajectory of each policy before (0) and
    after 1, 2, 3 steps. rows : {row: [Rollouts after 0, 1, … steps]} (each over all goals)."""
    names = list(rows)
    fig, axes = plt.subplots(len(names), len(goal_indices), squeeze=False,
                             figsize=(3.4 * len(goal_indices), 3.2 * len(names)))
    shades = plt.get_cmap("viridis")
    for r, row in enumerate(names):
        for c, g in enumerate(goal_indices):
            ax = axes[r, c]
            ros = rows[row]
            for s, ro in enumerate(ros):
                xy = ro.positions(g, 0)                              # (L + 1, 2) s_0 … s_L
                ax.plot(xy[:, 0], xy[:, 1], "-", color=shades(s / max(len(ros) - 1, 1)),
                        lw=1.5, label=f"{s} steps")
            goal = ros[0].goals[g]
            ax.plot(*goal, "r*", ms=12, label="goal")
            ax.plot(0, 0, "k.", ms=6)
            ax.set_xlim(-0.6, 0.6)
            ax.set_ylim(-0.6, 0.6)
            ax.set_aspect("equal")
            ax.set_title(f"{LABELS.get(row, row)}, goal {g}", fontsize=9)
            if r == 0 and c == 0:
                ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return _finish(fig, path)
