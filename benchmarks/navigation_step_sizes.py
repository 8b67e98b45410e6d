"""How a trained navigation policy's test-time adaptation depends on the later step sizes.

Dimension legend: G goals (40), S adaptation steps, P parameters.

The paper's test (test_maml_point.py) adapts with a policy-gradient step of 0.5, then steps of
0.25. This script re-runs that test on a run's θ with other sizes for the steps after the
first (the first stays 0.5) and splits the goals by their distance from the start (thirds),
to show where the return after 2-3 steps is lost. It prints, per later-step size, the mean
± 95 % CI over goals after 0 … S steps, then the mean after 2 steps for the near, middle and
far third of the goals.

    python benchmarks/navigation_step_sizes.py RUN [--later 0.0625 0.125 0.25] [--steps 4]
                                                   [--goals held-out|paper]

RUN is a navigation run directory (``python -m mamlnp train navigation``). This is a
diagnostic, not the protocol: the protocol's numbers come from ``mamlnp evaluate`` /
``mamlnp reproduce navigation``, which use 0.5 then 0.25.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mamlnp.run import navigation_eval as NE          # noqa: E402
from mamlnp.run.navigation_checkpoint import load_checkpoint   # noqa: E402


def returns_with_later_steps(policy, theta, goals, later, steps, seed=NE.EVAL_SEED):
    """(G, S + 1) returns after 0 … S steps, steps 0.5 then ``later`` (the test's draws)."""
    saved = NE.STEP_SIZES
    try:
        NE.STEP_SIZES = (NE.STEP_SIZES[0], later)
        return NE.adaptation_returns(policy, theta, goals, steps=steps,
                                     rng=np.random.default_rng(seed))[0]
    finally:
        NE.STEP_SIZES = saved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--later", type=float, nargs="+", default=[0.0625, 0.125, 0.25])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--goals", choices=("held-out", "paper"), default="held-out")
    args = p.parse_args(argv)
    policy, theta, cfg = load_checkpoint(args.run)
    goals = NE.paper_goals() if args.goals == "paper" else NE.held_out_goals()
    third = np.array_split(np.argsort(np.linalg.norm(goals, axis=1)), 3)
    print(f"{args.run}: {cfg['iteration']} iterations, {args.goals} goals; first step 0.5")
    for later in args.later:
        ret = returns_with_later_steps(policy, theta, goals, later, args.steps)
        cells = " ".join(f"{r['mean']:7.2f} ± {r['ci95']:.2f}" for r in NE.summarize(ret))
        split = " / ".join(f"{ret[i, 2].mean():.2f}" for i in third)
        print(f"later steps {later:<7g} {cells}   after 2 steps near / middle / far: {split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
