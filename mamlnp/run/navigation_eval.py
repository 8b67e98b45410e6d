"""Evaluating navigation policies as the paper does (Finn et al. 2017, Fig. 4, Table 4).

Dimension legend: G test goals (40), N trajectories per step (40), S adaptation steps (3),
P parameters.

cbfinn/maml_rl's test_maml_point.py: for each of G goals, sample a batch (VPG's
batch_size = 4000 = N·H steps of whole episodes: sampler "steps"; or exactly N = 40
episodes: sampler "episodes"), take a plain policy-gradient step (vanilla PG on
mean_m Â log π, the same advantages as training) of size 0.5, then steps of 0.25, sampling
a fresh batch after each; the score after s steps is the average undiscounted return Σ_t r_t
of that batch's episodes. Rows: MAML, the
pretrained policy, a randomly initialised policy (a fresh Xavier θ per goal, tanh hidden
layers as in the test script), the oracle
(goal observed; scored before any step, as in the paper); ``reproduce`` adds MAML meta-trained
with the ``lvc`` estimator instead of the paper's ``maml``. Each entry: mean over the G goals
± 1.96 · std / √G (std with ddof = 1).

The test goals come from their own seed (``EVAL_SEED``), never from a training run's.
"""
import json
import os

import numpy as np

from ..meta import rl as RL
from ..meta.maml import check_backend
from ..tasks import navigation as nav
from ..tasks.navigation import GOAL_RANGE
from ..validation import nonneg_int, positive_int
from .rundir import atomic_write, make_output_dir

STEP_SIZES = (0.5, 0.25)          # the first PG step, every later one
EVAL_GOALS, EVAL_TRAJECTORIES, EVAL_STEPS, EVAL_SEED = 40, 40, 3, 2017
EVAL_SAMPLER = "steps"            # batch_size 4000 = 40·100 steps of whole episodes
Z95 = 1.96
# Average return after 0-3 steps, from the data files behind the paper's Fig. 4 (the MAML
# row is its Table 4); the oracle is reported before adaptation only.
PAPER = {"maml": (-40.41, -11.68, -3.33, -3.23), "pretrain": (-40.81, -19.73, -11.72, -8.47),
         "random": (-82.66, -57.96, -53.84, -46.81), "oracle": (-2.29,)}
# The paper's random-init row: test_maml_point.py builds GaussianMLPPolicy(hidden_sizes=(100,
# 100)) without a nonlinearity, i.e. rllab's default tanh hidden layers.
RANDOM_ACTIVATION = "tanh"
LABELS = {"maml": "MAML",
          "maml-lvc": "MAML with ProMP's lvc estimator",
          "maml-dice": "MAML with the dice estimator",
          "pretrain": "pretrained", "random": "random init", "oracle": "oracle"}
PAPER_ROW = {"maml-lvc": "maml", "maml-dice": "maml"}   # the paper row a row of ours is set beside


def held_out_goals(num_goals=EVAL_GOALS, seed=EVAL_SEED):
    """(G, 2) held-out goals uniform in [−0.5, 0.5]², from their own seed."""
    return nav.sample_goals(np.random.default_rng(np.random.SeedSequence([seed, 0x4E4156])),
                            num_goals)


def paper_goals():
    """(40, 2) the paper's own test goals: test_maml_point.py's ``np.random.seed(1);
    np.random.uniform(-0.5, 0.5, size=(40, 2))`` (NumPy's legacy generator, same draws)."""
    return np.random.RandomState(1).uniform(GOAL_RANGE[0], GOAL_RANGE[1], size=(EVAL_GOALS, 2))


def adaptation_returns(policy, thetas, goals, trajectories=EVAL_TRAJECTORIES, steps=EVAL_STEPS,
                       rng=0, oracle=False, keep=False, sampler=EVAL_SAMPLER, backend=None):
    """Average return per goal after 0 … S plain PG steps: -> (returns (G, S + 1), rollouts).

    thetas : θ (P,) for every goal, or (G, P) one per goal; goals (G, 2); rng a seed or
    Generator (the rollouts' noise). ``keep``: also return the S + 1 Rollouts (for drawings).
    sampler: "steps" (N·H steps of whole episodes per batch, the test script's) or "episodes".
    backend: the PG steps' points, "numba" (None: the default) or "numpy" (rl.inner_step).
    """
    goals = nav.check_goals(goals)
    steps = nonneg_int("steps", steps)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    G = goals.shape[0]
    thetas = np.array(np.broadcast_to(thetas, (G, policy.num_params)), dtype=np.float64)
    out, kept = np.empty((G, steps + 1)), []
    for s in range(steps + 1):
        ro = nav.sample(policy, thetas, goals, positive_int("trajectories", trajectories), rng,
                        oracle=oracle, sampler=sampler)
        out[:, s] = ro.average_return()                             # (G,) mean Σ_t r_t
        if keep:
            kept.append(ro)
        if s < steps:
            lr = STEP_SIZES[0] if s == 0 else STEP_SIZES[1]
            thetas = np.stack([RL.inner_step(policy, th, smp, lr, backend)
                               for th, smp in zip(thetas, nav.to_samples(ro))])
    return out, kept


def summarize(returns):
    """[{"steps", "mean", "ci95", "std", "n"}] per column of returns (G, S + 1)."""
    G = returns.shape[0]
    std = returns.std(axis=0, ddof=1) if G > 1 else np.zeros(returns.shape[1])
    return [{"steps": s, "mean": float(returns[:, s].mean()),
             "ci95": float(Z95 * std[s] / np.sqrt(G)),
             "std": float(std[s]), "n": G} for s in range(returns.shape[1])]


def evaluate_policies(entries, goals=None, trajectories=EVAL_TRAJECTORIES, steps=EVAL_STEPS,
                      seed=EVAL_SEED, keep=False, sampler=EVAL_SAMPLER, backend=None):
    """{row: {"returns" (G, S+1), "summary", "rollouts"}} for entries {row: (policy, θ or None)};
    θ None: a random initialisation per goal ("random init"); row "oracle" is scored at 0 steps.
    backend: adaptation_returns'."""
    goals = held_out_goals(seed=seed) if goals is None else nav.check_goals(goals)
    backend = check_backend(backend)
    results = {}
    for i, (row, (policy, theta)) in enumerate(entries.items()):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1 + i]))
        if theta is None:
            theta = np.stack([policy.init(rng) for _ in range(goals.shape[0])])
        oracle = policy.obs_dim == 4
        ret, ros = adaptation_returns(policy, theta, goals, trajectories, 0 if oracle else steps,
                                      rng, oracle, keep, sampler, backend)
        results[row] = {"returns": ret, "summary": summarize(ret), "rollouts": ros}
    return goals, results


def format_table(results, steps=EVAL_STEPS):
    """Markdown: our rows (mean ± 95 % CI over goals) beside the paper's."""
    head = "| policy | " + " | ".join(f"{s} steps (ours)" for s in range(steps + 1)) + \
           " | paper: " + " / ".join(str(s) for s in range(steps + 1)) + " |"
    lines = [head, "|---|" + "---:|" * (steps + 2)]
    for row, res in results.items():
        cells = [f"{r['mean']:.2f} ± {r['ci95']:.2f}" for r in res["summary"]]
        cells += [""] * (steps + 1 - len(cells))
        paper = " / ".join(f"{v:.2f}" for v in PAPER.get(PAPER_ROW.get(row, row), ()))
        lines.append(f"| {LABELS.get(row, row)} | " + " | ".join(cells) + f" | {paper} |")
    return "\n".join(lines)


SAMPLER_TEXT = {"steps": "each batch {n}·100 steps of whole episodes (the test script's "
                          "batch_size)", "episodes": "each batch exactly {n} episodes"}


def write_results(results, goals, out, meta=None, trajectories=EVAL_TRAJECTORIES,
                  sampler=EVAL_SAMPLER, extra=()):
    """results.json and results.md into ``out`` (atomically); returns their paths.
    extra: more tables, [(title, goals, results, sampler), …] (under "extra" in the json)."""
    make_output_dir(out)
    meta = {**(meta or {}), "trajectories": trajectories, "sampler": sampler}
    rows = lambda res: {row: {"summary": r["summary"], "per_goal": r["returns"].tolist()}  # noqa
                        for row, r in res.items()}
    doc = {"goals": goals.tolist(), "meta": meta, "paper": PAPER, "rows": rows(results),
           "extra": [{"title": t, "goals": g.tolist(), "sampler": smp, "rows": rows(r)}
                     for t, g, r, smp in extra]}
    paths = [os.path.join(out, "results.json"), os.path.join(out, "results.md")]
    text = json.dumps(doc, indent=2) + "\n"
    atomic_write(paths[0], lambda f: f.write(text.encode()))
    md = ("# 2D navigation: average return after 0-3 policy-gradient steps\n\n"
          f"{goals.shape[0]} held-out goals, mean ± 95 % CI over goals; "
          f"{SAMPLER_TEXT[sampler].format(n=trajectories)}.\n\n" + format_table(results) + "\n")
    for title, g, res, smp in extra:
        md += (f"\n## {title}\n\n{g.shape[0]} goals; "
               f"{SAMPLER_TEXT[smp].format(n=trajectories)}.\n\n" + format_table(res) + "\n")
    atomic_write(paths[1], lambda f: f.write(md.encode()))
    return paths
