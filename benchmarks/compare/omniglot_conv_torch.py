"""mamlnp's conv Omniglot workload in PyTorch: a loop over the tasks, each task's inner steps by
torch.autograd.grad with create_graph (exact second order; without it, first order), one
backward of the mean query loss; float64.

Dimension legend: T tasks, N ways, K support and Q query images per class, P parameters,
s inner steps.

The network and θ's layout are mamlnp.ConvNet's (omniglot_conv_common.py). ``meta_gradient``
returns (meta-loss, ∇θ (P,)) in mamlnp's layout, which tests/test_conv_compare.py checks
against mamlnp.meta_gradient to 1e-10. Run as a script it times the meta-gradient on one fixed
random batch and prints ``RESULT {json}`` per order (benchmarks/bench_conv.py runs it):

    python benchmarks/compare/omniglot_conv_torch.py --ways 5 --shots 1 --query 1 --steps 1
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import omniglot_conv_common as common  # noqa: E402


def forward(params, x, geom):
    import torch
    import torch.nn.functional as Fn
    C, H, Wd = geom["in_shape"]
    h = x.reshape(-1, C, H, Wd)                                          # NCHW
    for W, b, gamma, beta in params[:-1]:
        z = Fn.conv2d(h, W, b, stride=geom["stride"], padding=geom["pad"])
        h = torch.relu(Fn.batch_norm(z, None, None, gamma, beta, training=True,
                                     eps=geom["eps"]))           # batch statistics, biased var
    Wh, bh = params[-1]
    return h.mean(dim=(2, 3)) @ Wh + bh


def loss(params, x, y, geom):
    import torch
    return -(y * torch.log_softmax(forward(params, x, geom), dim=1)).sum(dim=1).mean()


def meta_loss(flat, data, alpha, steps, first_order, geom):
    """The mean query loss after ``steps`` inner steps, task by task (a graph to θ)."""
    import torch
    xs, ys, xq, yq = data
    total = 0.0
    for t in range(xs.shape[0]):
        p = flat
        for _ in range(steps):
            g = torch.autograd.grad(loss(_nest(p), xs[t], ys[t], geom), p,
                                    create_graph=not first_order)
            p = [a - alpha * d for a, d in zip(p, g)]
        total = total + loss(_nest(p), xq[t], yq[t], geom)
    return total / xs.shape[0]


def _nest(flat):
    """[W, b, γ, β, …, W_h, b_h] -> [[W, b, γ, β] per block] + [[W_h, b_h]]."""
    blocks = [flat[i:i + 4] for i in range(0, len(flat) - 2, 4)]
    return blocks + [flat[-2:]]


def leaves(theta, ways, geom):
    import torch
    return [torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True)
            for group in common.split(theta, geom, ways) for a in group]


def meta_gradient(theta, xs, ys, xq, yq, alpha, steps, first_order, geom=common.GEOMETRY):
    """(meta-loss, ∇θ (P,)) for mamlnp's flat θ and a batch (T, N·K, D) ..."""
    import torch
    flat = leaves(theta, ys.shape[-1], geom)
    data = [torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (xs, ys, xq, yq)]
    value = meta_loss(flat, data, alpha, steps, first_order, geom)
    grads = torch.autograd.grad(value, flat)
    return float(value.detach()), np.concatenate([g.detach().numpy().ravel() for g in grads])


def main():
    import torch
    a = common.parser(__doc__).parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    N, geom = a.ways, common.GEOMETRY
    flat = leaves(common.theta0(geom, N), N, geom)
    data = [torch.as_tensor(v) for v in common.batch(a.meta_batch, N, a.shots, a.query)]
    for order in a.order:
        def call():
            torch.autograd.grad(meta_loss(flat, data, a.alpha, a.steps, order == 1, geom), flat)
        first, ms = common.time_calls(call, a.reps)
        common.report("torch-loop", a, order, first, ms)


if __name__ == "__main__":
    main()
