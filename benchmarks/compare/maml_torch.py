"""MAML in PyTorch on the project's two workloads: the comparison the benchmarks time mamlnp against.

Dimension legend: T tasks, K support / Q query points per task (N·K, N·Q for N-way), D inputs,
O outputs, P parameters, s = inner steps.

A measuring instrument, not part of mamlnp (which never imports PyTorch). Installed with
``pip install -e ".[compare]"`` (PyTorch 2.13, CPU). The network and the meta-objective of
common.py, in the three ways PyTorch MAML code is written:

  --impl loop     a Python loop over the tasks, ``torch.autograd.grad(create_graph=True)`` for
                  the inner steps (the learn2learn / higher style)
  --impl func     ``torch.func.grad`` through the inner steps, ``vmap`` over the tasks
  --impl compile  ``torch.compile`` of the ``func`` meta-gradient

    meta_loss(θ) = (1/T) Σ_t L_Q,t(θ_s^(t)),   θ_{k+1}^(t) = θ_k^(t) − α ∇L_S,t(θ_k^(t))

    python benchmarks/compare/maml_torch.py --impl func --workload sinusoid --steps 1 5
    python benchmarks/compare/maml_torch.py --impl compile --workload omniglot --order 2
    python benchmarks/compare/maml_torch.py --impl func --worker    # for bench_meta_gradient.py

prints one ``RESULT {json}`` line per (s, order) (common.report). ``meta_gradient`` below is
what tests/test_compare.py checks against mamlnp's to 1e-10, for each impl.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import torch  # noqa: E402
from torch.func import grad, grad_and_value, vmap  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def unflatten(theta, sizes, batch_norm, dtype, requires_grad=True):
    """Flat θ (P,) in mamlnp's layout -> {block name: tensor}."""
    return {name: torch.tensor(theta[o:o + int(np.prod(shape))].reshape(shape), dtype=dtype,
                               requires_grad=requires_grad)
            for name, o, shape in common.layout(sizes, batch_norm)}


def flatten(grads, sizes, batch_norm):
    """{block name: tensor} -> flat (P,) NumPy float64 in mamlnp's layout."""
    return np.concatenate([grads[name].detach().double().numpy().ravel()
                           for name, _, _ in common.layout(sizes, batch_norm)])


def make_loss(sizes, batch_norm, loss):
    """L(p, x, y): the MLP of common.py on a set x (N, D), y (N, O)."""
    L = len(sizes) - 1

    def value(p, x, y):
        h = x
        for l in range(L - 1):
            z = h @ p[f"W{l}"] + p[f"b{l}"]                          # (N, H_l)
            if batch_norm:
                zc = z - z.mean(0)
                s = 1.0 / torch.sqrt((zc * zc).mean(0) + common.BN_EPS)  # (H_l,)
                z = p[f"gamma{l}"] * zc * s + p[f"beta{l}"]
            h = torch.relu(z)
        out = h @ p[f"W{L - 1}"] + p[f"b{L - 1}"]                    # (N, O)
        if loss == "mse":
            return ((out - y) ** 2).mean()
        return -(y * torch.log_softmax(out, dim=1)).sum() / x.shape[0]

    return value


def make_meta_grad(impl, sizes, batch_norm, loss, alpha, steps, first_order):
    """(p, xs, ys, xq, yq) -> (meta-loss, {name: ∇}); xs (T, N·K, D), ys (T, N·K, O), …"""
    value = make_loss(sizes, batch_norm, loss)
    if impl == "loop":
        def loop(p, xs, ys, xq, yq):
            names, total = list(p), 0.0
            for t in range(xs.shape[0]):
                q = dict(p)
                for _ in range(steps):
                    gs = torch.autograd.grad(value(q, xs[t], ys[t]), [q[n] for n in names],
                                             create_graph=not first_order)
                    q = {n: q[n] - alpha * g for n, g in zip(names, gs)}
                total = total + value(q, xq[t], yq[t])
            meta = total / xs.shape[0]
            gs = torch.autograd.grad(meta, [p[n] for n in names])
            return meta.detach(), dict(zip(names, gs))
        return loop

    def task_loss(p, xs, ys, xq, yq):
        for _ in range(steps):
            g = grad(value)(p, xs, ys)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
            p = {k: p[k] - alpha * g[k] for k in p}
        return value(p, xq, yq)

    def meta_loss(p, xs, ys, xq, yq):
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq).mean()

    def func(p, xs, ys, xq, yq):
        g, val = grad_and_value(meta_loss)(p, xs, ys, xq, yq)
        return val, g

    return torch.compile(func) if impl == "compile" else func


def meta_gradient(theta, xs, ys, xq, yq, sizes, batch_norm, loss, alpha, steps,
                  first_order=False, impl="func"):
    """(meta-loss, ∇θ (P,)) in float64 for a flat θ in mamlnp's layout: the checked entry."""
    f = make_meta_grad(impl, sizes, batch_norm, loss, alpha, steps, first_order)
    p = unflatten(theta, sizes, batch_norm, torch.float64, requires_grad=impl == "loop")
    val, g = f(p, *(torch.tensor(a, dtype=torch.float64) for a in (xs, ys, xq, yq)))
    return float(val), flatten(g, sizes, batch_norm)


class Sinusoid:
    """The worker's state for one (s, order) on the sinusoid workload (common.serve)."""

    impl = "func"

    def __init__(self, s, first_order, rng):
        w = common.WORKLOADS["sinusoid"]
        self.w, self.rng = w, rng
        self.mg = make_meta_grad(self.impl, w["sizes"], False, "mse", w["alpha"], s,
                                 first_order)
        self.p = unflatten(common.init_theta(w["sizes"], False), w["sizes"], False,
                           torch.float64, requires_grad=self.impl == "loop")
        self.opt = torch.optim.Adam(list(self.p.values()), lr=1e-3)
        self.fixed = self.sample()

    def sample(self):
        w = self.w
        return [torch.from_numpy(a) for a in common.sinusoid_batch(self.rng, w["meta_batch"],
                                                                   w["shots"], w["query"])]

    def iterate(self):
        loss, g = self.mg(self.p, *self.sample())
        for name, t in self.p.items():
            t.grad = g[name].detach()
        self.opt.step()
        return float(loss)

    def gradient(self):
        return self.mg(self.p, *self.fixed)

    @staticmethod
    def sync(out):
        return out                           # PyTorch on the CPU returns finished results


def main(argv=None):
    ap = common.workload_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--impl", choices=["loop", "func", "compile"], default="func")
    ap.add_argument("--worker", action="store_true",
                    help="serve bench_meta_gradient.py's JSON commands on stdin (sinusoid)")
    args = ap.parse_args(argv)
    if args.worker:
        Sinusoid.impl = args.impl
        return common.serve(Sinusoid)
    sizes, bn, loss, alpha, T, K, Q, data = common.resolve(args)
    dtype = DTYPES[args.dtype]
    p = unflatten(common.init_theta(sizes, bn), sizes, bn, dtype,
                  requires_grad=args.impl == "loop")
    data = [torch.tensor(a, dtype=dtype) for a in data]
    for s in args.steps:
        for order in args.order:
            f = make_meta_grad(args.impl, sizes, bn, loss, alpha, s, order == 1)
            first, ms = common.time_blocks(lambda: f(p, *data), lambda out: out,
                                           args.reps, args.block)
            common.report(f"torch-{args.impl}", args, T, K, Q, s, order, first, ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
