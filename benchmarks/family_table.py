"""Every method of the MAML family on the same budget: the sinusoid table of docs/results.md.

Dimension legend: K support points (shots), P parameters, s = inner_steps.

Each method is meta-trained with the paper's sinusoid protocol (1-40-40-1 ReLU, K = Q = 10,
α = 0.01, one inner step, Adam β = 1e-3, meta-batch 25, seed 0, ``--iterations`` meta-
iterations, default the paper's 70,000) and the method's own defaults (iMAML λ = 1, 5 CG
steps; MAML++ epochs of 500 iterations, MSL over 10, first order for 50). Each is then
scored like ``mamlnp evaluate`` on the 600 held-out tasks of the evaluation pool (seed 2017)
at K = 5 and K = 10: query MSE after 1 and 10 steps, adapting as it adapted in training
(Meta-SGD its learned α, MAML++ its learned per-step table, ANIL the head only; the
pretrained baseline with the paper's tuned steps, 0.01 for K = 5 and 0.02 for K = 10).
Prints a markdown table with each method's training wall time.

``--task omniglot``: 5-way 1-shot Omniglot instead, each method with the Omniglot protocol's
defaults (the batch-norm MLP, α = 2.0 on the mean loss, meta-batch 32, one inner step, Adam
β = 1e-3; mamlnp train omniglot) for ``--iterations``, scored like ``mamlnp evaluate`` on the
600 test episodes (seed 2017): accuracy after 0, 1 and 10 steps, adapting as in training.
The data folder comes from --data-dir or MAMLNP_DATA_DIR, as for ``mamlnp train``.

    python benchmarks/family_table.py                           # all 8 methods, ~15 min on 2 cores
    python benchmarks/family_table.py --methods maml anil --iterations 5000
    python benchmarks/family_table.py --task omniglot --iterations 500
    python benchmarks/family_table.py --methods imaml --lam 100 --iterations 5000   # λ = 1/α
    python benchmarks/family_table.py --methods imaml --set inner_steps=10 --set alpha=0.05 --set lam=10
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import mamlnp  # noqa: E402
from mamlnp.meta.variants import METHODS  # noqa: E402
from mamlnp.run import evaluate as E  # noqa: E402

SHOTS, STEPS = (5, 10), (1, 10)
OMNI_STEPS = (0, 1, 10)


def method_keys(method, a):
    """Config keys given on the command line: iMAML's --lam, and every --set KEY=VALUE."""
    keys = {"lam": a.lam} if method == "imaml" and a.lam is not None else {}
    for item in a.set or ():
        k, _, v = item.partition("=")
        keys[k] = int(v) if v.lstrip("-").isdigit() else float(v)
    return keys


def train_and_score(method, iterations, seed, keys=None):
    """(wall seconds of training, {(K, steps): (mean, ci95)})."""
    t0 = time.perf_counter()
    r = mamlnp.meta_train(task="sinusoid", method=method, iterations=iterations, seed=seed,
                          shots=10, query=10, progress=False, **(keys or {}))
    wall = time.perf_counter() - t0
    alpha = E.default_alpha(r.config, SHOTS, r.model)
    res = E.evaluate(r.model, r.theta, alpha, shots=SHOTS, max_steps=max(STEPS), label=method)
    cells = {(row["shots"], row["steps"]): (row["mean"], row["ci95"]) for row in res.rows}
    return wall, cells


def train_and_score_omniglot(method, iterations, seed, data_dir, keys=None):
    """(wall seconds of training, {steps: (mean, ci95)}) of 5-way 1-shot accuracy."""
    from mamlnp.run.classify_report import evaluate_run
    t0 = time.perf_counter()
    r = mamlnp.meta_train(task="omniglot", ways=5, shots=1, method=method, iterations=iterations,
                          seed=seed, data_dir=data_dir, progress=False, **(keys or {}))
    wall = time.perf_counter() - t0
    res = evaluate_run(r.model, r.theta, r.config, max_steps=max(OMNI_STEPS))
    return wall, {row["steps"]: (row["mean"], row["ci95"]) for row in res["rows"]}


def run_name(method, keys):
    """The table's row label: the method, and the config keys given for it."""
    return method + (" (" + ", ".join(f"{k} = {v:g}" for k, v in keys.items()) + ")"
                     if keys else "")


def print_table(a, title, head, columns, score, fmt, caption):
    """Train and score every method of ``a.methods`` (``score(method, keys) -> (wall,
    cells)``), printing each markdown row as it is measured, then the whole table."""
    lines = [f"| method ({a.iterations:,} iterations, {title}) | {head} | training wall s |",
             "|---|" + "---:|" * (len(columns) + 1)]
    for m in a.methods:
        keys = method_keys(m, a)
        wall, cells = score(m, keys)
        row = " | ".join(fmt(*cells[c]) for c in columns)
        lines.append(f"| {run_name(m, keys)} | {row} | {wall:.0f} |")
        print(lines[-1], flush=True)
    print(f"\n{caption}\n")
    print("\n".join(lines))


def omniglot_table(a):
    print_table(a, "5-way 1-shot", " | ".join(f"{s} step{'' if s == 1 else 's'}"
                                              for s in OMNI_STEPS),
                OMNI_STEPS, lambda m, keys: train_and_score_omniglot(
                    m, a.iterations, a.seed, a.data_dir, keys),
                lambda mean, ci: f"{100 * mean:.2f} ± {100 * ci:.2f}",
                "test accuracy %, mean ± 95% CI over 600 test episodes")


def sinusoid_table(a):
    print_table(a, "K=10 training", " | ".join(f"K={k}, {s} step{'s' if s > 1 else ''}"
                                               for k in SHOTS for s in STEPS),
                [(k, s) for k in SHOTS for s in STEPS],
                lambda m, keys: train_and_score(m, a.iterations, a.seed, keys),
                lambda mean, ci: f"{mean:.3f} ± {ci:.3f}",
                "query MSE, mean ± 95% CI over 600 held-out tasks")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--iterations", type=int, default=70000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", choices=("sinusoid", "omniglot"), default="sinusoid")
    p.add_argument("--data-dir", default=None, help="the Omniglot folder (else MAMLNP_DATA_DIR)")
    p.add_argument("--lam", type=float, default=None, help="iMAML's λ (default: its own, 1.0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="another config key for every method, e.g. inner_steps=10")
    a = p.parse_args()
    for item in a.set or ():
        k, _, v = item.partition("=")
        try:
            float(v)
        except ValueError:
            k = ""
        if not k:
            p.error(f"--set: expected KEY=NUMBER (e.g. inner_steps=10), got {item!r}")
    return omniglot_table(a) if a.task == "omniglot" else sinusoid_table(a)


if __name__ == "__main__":
    main()
