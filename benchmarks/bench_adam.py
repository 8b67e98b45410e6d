"""ms per Adam step of the outer loop, as the step-by-step trainer calls it (θ replaced by the
returned array each step), for several P, on NUMBA_NUM_THREADS threads.

    NUMBA_NUM_THREADS=2 python benchmarks/bench_adam.py [--sizes 1761 247621] [--steps 300]

Prints the median over ``--steps`` calls (after 5 warm-up calls) of, in interleaved rounds:

* ``numpy``    Adam._step (the reference: new θ, m, v arrays every step);
* ``fresh``    fast/common/adam.py adam_update into three fresh arrays (the compiled path
               for P < PARALLEL_ADAM);
* ``serial``   adam_inplace on one thread: m, v in place, θ' into the θ of the step before
               (the parallel path's arithmetic, without the region);
* ``adam_step`` fast/common/adam.py adam_step (for P >= PARALLEL_ADAM: adam_update_parallel
               on all threads, the optimizer's m, v in place, θ' into fresh memory).

Set ``--malloc`` to apply the commands' glibc settings first (mamlnp.run.process): fresh
arrays then reuse freed memory instead of page faults. Nothing here is asserted.
"""
import argparse
import time

import numba
import numpy as np

from mamlnp.fast import spin_threads
from mamlnp.fast.common import adam as CA
from mamlnp.fast.common.adam import adam_inplace, adam_update
from mamlnp.meta.optim import Adam

spin_threads()


def hp_of(opt):
    return np.array([opt.lr, opt.beta1, 1.0 - opt.beta1, opt.beta2, 1.0 - opt.beta2, opt.eps,
                     1.0 - opt.beta1 ** opt.t, 1.0 - opt.beta2 ** opt.t])


def fresh(opt, theta, g):
    opt.t += 1
    out, m, v = np.empty_like(theta), np.empty_like(g), np.empty_like(g)
    adam_update(theta, g, opt._m, opt._v, hp_of(opt), out, m, v)
    opt._m, opt._v = m, v
    return out


def serial(opt, theta, g):
    opt.t += 1
    out = getattr(opt, "_spare", None)
    out = np.empty_like(theta) if out is None else out
    adam_inplace(theta, g, opt._m, opt._v, hp_of(opt), out)
    opt._spare = theta
    return out


WAYS = {"numpy": lambda opt, th, g: opt._step(th, g), "fresh": fresh, "serial": serial,
        "adam_step": CA.adam_step}


def time_steps(way, P, steps, rng):
    opt = Adam(1e-3)
    opt.m, opt.v = np.zeros(P), np.zeros(P)
    theta, g = rng.standard_normal(P), rng.standard_normal(P) * 1e-2
    times = []
    for i in range(steps + 5):
        t = time.perf_counter()
        theta = WAYS[way](opt, theta, g)
        if i >= 5:
            times.append(time.perf_counter() - t)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1761, 247621])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--malloc", action="store_true")
    args = p.parse_args(argv)
    if args.malloc:
        from mamlnp.run.process import keep_freed_memory
        print("malloc settings:", keep_freed_memory())
    rng = np.random.default_rng(0)
    print(f"threads {numba.get_num_threads()}, PARALLEL_ADAM {CA.PARALLEL_ADAM}; "
          f"median ms per step over {args.rounds} interleaved rounds")
    for P in args.sizes:
        times = {w: [] for w in WAYS}
        for _ in range(args.rounds):
            for w in WAYS:
                times[w] += time_steps(w, P, args.steps, rng)
        print(f"P = {P:7d}  " + "  ".join(f"{w} {1e3 * np.median(t):.4f}"
                                          for w, t in times.items()))


if __name__ == "__main__":
    main()
