"""Test accuracy of classification runs: ``evaluate RUN`` and ``reproduce omniglot``.

Dimension legend: T = 600 test episodes, N ways, K shots, Q = K query drawings per class,
S = max_steps (10).

``evaluate_run``: the run's θ is adapted on each of 600 fixed test episodes (test characters,
``OmniglotTasks.episodes("test", 600, K, K, seed=2017)``) with 0 … S SGD steps at the run's α;
accuracy on the episode's query set; per step: mean ± 1.96 · std / √600 (cbfinn/maml main.py
``test``). Writes omniglot_results.csv, omniglot_results.json (every episode's accuracies) and
omniglot_accuracy.png (accuracy against steps).

``reproduce_omniglot``: trains the paper's 5-way 1-shot and 5-way 5-shot MLPs (protocol in
run/classify.py), evaluates both, and writes results.md beside the paper's Table 1 row for
the MLP (89.7 ± 1.1 %, 97.5 ± 0.6 %); with ``model="conv"`` (``--model conv``) the ConvNet's,
beside the conv row (98.7 ± 0.4 %, 99.9 ± 0.1 %).
"""
import csv
import io
import json
import os
import resource
import shlex
import sys
import time

import numpy as np

from . import classify as CL
from ..errors import InputError
from ..fast.compile_notice import first_call_notice
from ..meta.variants import run_alpha
from ..nn.spec import kind_of
from ..validation import check_memory, positive_int, step_count
from .rundir import EVAL_NAME, training_seconds

QUICK_ITERATIONS = 200               # reproduce omniglot --quick
CHUNK = 50                           # episodes built and scored at a time (memory)
TABLE_STEPS = (0, 1, 3, 5, 10)       # 1: 5-way training; 3: the paper's test (A.1); 10: main.py


def evaluate_run(model, theta, config, alpha=None, max_steps=10, episodes=CL.TEST_EPISODES,
                 seed=CL.TEST_SEED, family=None, backend=None):
    """{"rows": [{steps, mean, ci95, std, n}], "accuracy": (T, S+1), …} on the test episodes;
    adapting on ``backend`` (None: mamlnp.meta.maml.DEFAULT_BACKEND)."""
    from .runconfig import family_for
    max_steps = step_count("max_steps", max_steps)
    episodes = positive_int("episodes", episodes)
    check_memory("max_steps", max_steps, 8 * (episodes + model.num_params) * (max_steps + 1),
                 f"the accuracy curves of {episodes} episodes and, on the NumPy path, the "
                 f"{max_steps + 1} iterates of θ")                    # before reading the data
    family = family_for(config) if family is None else family
    given, alpha = alpha, run_alpha(config, model, alpha)       # as in training (--inner-bn)
    K = config["shots"]
    acc = np.concatenate([
        CL.accuracy_curve(model, theta, family.episodes("test", min(CHUNK, episodes - s), K, K,
                                                        seed=seed, start=s), alpha, max_steps,
                          backend)
        for s in range(0, episodes, CHUNK)])                              # (T, S+1)
    scalar = config["alpha"] if given is None else given              # the step before masking
    shown = float(alpha) if np.ndim(alpha) == 0 else "learned" if config["method"] in (
        "metasgd", "mamlpp") else "head only" if config["method"] == "anil" else (
        f"{float(scalar)} (γ, β fixed)" if np.ndim(scalar) == 0 else "per-parameter")
    rows = [{"ways": config["ways"], "shots": K, "steps": s, "alpha": shown,
             **CL.summarize_accuracy(acc[:, s])} for s in range(max_steps + 1)]
    return {"rows": rows, "accuracy": acc, "seed": seed, "ways": config["ways"], "shots": K,
            "trained_inner_steps": config["inner_steps"], "method": config["method"],
            "model": kind_of(config["model"])}


def format_rows(result, steps=None):
    lines = [f"{'N-way':>5} {'K':>3} {'steps':>5} {'test accuracy % (mean ± 95% CI)':>33} {'n':>4}"]
    for r in result["rows"]:
        if steps is None or r["steps"] in steps:
            lines.append(f"{r['ways']:>5} {r['shots']:>3} {r['steps']:>5} "
                         f"{100 * r['mean']:>22.2f} ± {100 * r['ci95']:<8.2f} {r['n']:>4}")
    return "\n".join(lines)


def write_outputs(result, out_dir, meta=None, plot=True, note=None):
    """omniglot_results.csv / .json and omniglot_accuracy.png in ``out_dir``; their paths.
    All are rendered first, then replaced together (mamlnp.run.rundir.atomic_write_all):
    never written through a planted link, and a failure (a full disk) keeps the previous
    version of every one. ``note``: a line on the figure (plots.SMOKE_NOTE for --quick)."""
    from .rundir import atomic_write_all, make_output_dir
    make_output_dir(out_dir)
    fields = ("ways", "shots", "steps", "alpha", "mean", "ci95", "std", "n")
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows({k: r[k] for k in fields} for r in result["rows"])
    doc = {"meta": meta or {}, "episodes": "test characters, OmniglotTasks.episodes('test', "
           f"{len(result['accuracy'])}, K, K, seed={result['seed']})",
           "ci95": "1.96 * std / sqrt(n), std with ddof=0 (cbfinn/maml main.py)",
           "rows": result["rows"], "accuracy": result["accuracy"].tolist(),
           "accuracy_note": "(episodes, steps+1) query accuracy after 0 … S steps"}
    files = {os.path.join(out_dir, "omniglot_results.csv"): text.getvalue().encode(),
             os.path.join(out_dir, "omniglot_results.json"):
                 json.dumps(doc, indent=1, allow_nan=False).encode()}
    if plot:
        files[os.path.join(out_dir, "omniglot_accuracy.png")] = accuracy_figure([result],
                                                                                note=note)
    return atomic_write_all(files)


def accuracy_figure(results, path=None, note=None):
    """Test accuracy (mean ± 95% CI band) against SGD steps, one line per result: the PNG's
    bytes, or written atomically to ``path`` (then the path)."""
    import matplotlib.pyplot as plt
    from .plots import figure_bytes
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for res in results:
        steps = np.array([r["steps"] for r in res["rows"]])
        mean = np.array([100 * r["mean"] for r in res["rows"]])
        ci = np.array([100 * r["ci95"] for r in res["rows"]])
        kind = res.get("model", "mlp")
        net = "conv " if kind == "conv" else ""
        line, = ax.plot(steps, mean, marker="o", ms=3,
                        label=f"{res['method']} {net}{res['ways']}-way {res['shots']}-shot")
        ax.fill_between(steps, mean - ci, mean + ci, color=line.get_color(), alpha=0.2)
        paper = CL.PAPER_TABLE1[kind].get((res["ways"], res["shots"]))
        if paper:                                        # the paper's MAML, any method's line
            ax.axhline(paper[0], color=line.get_color(), ls=":", lw=1)
    ax.set_xticks(steps)
    ax.set_xlabel("SGD steps on the support set")
    ax.set_ylabel("test accuracy (%)")
    rows = " and ".join(sorted({"conv" if r.get("model") == "conv" else "MLP" for r in results}))
    ax.set_title(f"Omniglot, {len(results[0]['accuracy'])} test episodes (dotted: paper, "
                 f"Table 1 {rows}, MAML)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    data = figure_bytes(fig, "png", note)
    if path is None:
        return data
    from .rundir import atomic_write
    atomic_write(path, lambda f: f.write(data))
    return path


SINUSOID_ONLY = {"shots": "an Omniglot run is tested at the K it was trained with",
                 "baseline": "compare Omniglot runs by evaluating each one",
                 "baseline_alpha": "a step size for --baseline's run"}


def refuse_options(args, options, what):
    """An option given for a run it does not apply to is an error that says so: ``options``
    {dest: why}, the options (argparse dests) that ``what`` does not use."""
    given = [(key, why) for key, why in options.items() if getattr(args, key, None) is not None]
    if given:
        key, why = given[0]
        raise InputError(f"--{key.replace('_', '-')}: does not apply to {what} ({why}); "
                         f"drop it")


def run_evaluate(args, alpha=None):
    """``mamlnp evaluate RUN`` for a classification run; ``alpha`` the parsed --alpha
    (None, a float, or {K: α})."""
    from .checkpoint import load_checkpoint
    refuse_options(args, SINUSOID_ONLY, "an Omniglot run")
    model, theta, config = load_checkpoint(args.run)
    if getattr(args, "data_dir", None):
        config = dict(config, data_dir=args.data_dir)
    if isinstance(alpha, dict):
        if config["shots"] not in alpha:
            raise InputError(f"alpha: no step size for K={config['shots']} (the run's shots) "
                             f"in {sorted(alpha)}")
        alpha = alpha[config["shots"]]
    backend = getattr(args, "backend", None)
    with first_call_notice(backend=backend):                    # kernels compile once
        result = evaluate_run(model, theta, config, alpha, args.max_steps, backend=backend)
    print(format_rows(result))
    run_dir = os.path.dirname(os.path.abspath(args.run)) if args.run.endswith(".npz") else args.run
    paths = write_outputs(result, args.out or os.path.join(run_dir, EVAL_NAME),
                          meta={"run": args.run}, plot=not args.no_plots)
    print("\nwrote:\n  " + "\n  ".join(paths))
    return 0


# ---- reproduce omniglot ---------------------------------------------------------------------

def reproduce_omniglot(out, iterations=None, seed=0, backend=None, data_dir=None, resume=False,
                       overwrite=False, progress=True, quick=False,
                       episodes=CL.TEST_EPISODES, model="mlp", **overrides):
    """Train and evaluate 5-way 1-shot and 5-shot of the network ``model`` ("mlp": the
    batch-norm MLP; "conv": the ConvNet); write results.md; returns its path.
    ``overrides``: other config keys for both runs (e.g. a small network in the tests)."""
    from .plots import SMOKE_NOTE
    from .train import meta_train
    results, walls = [], {}
    conv = "-conv" if model == "conv" else ""
    for K in (1, 5):
        run_dir = os.path.join(out, f"omniglot-5way-{K}shot{conv}-maml")
        has = os.path.exists(os.path.join(run_dir, "checkpoint.npz"))
        print(f"[reproduce] training MAML 5-way {K}-shot{conv.replace('-', ', ')} -> "
              f"{run_dir}", flush=True)
        kw = dict(overrides, **({} if iterations is None else {"iterations": iterations}))
        t0 = time.perf_counter()
        res = meta_train(task="omniglot", ways=5, shots=K, seed=seed, backend=backend,
                         data_dir=data_dir, out=run_dir, resume=resume and has,
                         overwrite=overwrite, progress=progress, model=model, **kw)
        walls[K] = training_seconds(run_dir, time.perf_counter() - t0)
        print(f"[reproduce] evaluating on {episodes} test episodes", flush=True)
        t1 = time.perf_counter()
        with first_call_notice(backend=backend):                # kernels compile once
            r = evaluate_run(res.model, res.theta, res.config, episodes=episodes, backend=backend)
        r["eval_seconds"], r["iterations"] = time.perf_counter() - t1, res.config["iteration"]
        write_outputs(r, os.path.join(run_dir, EVAL_NAME), meta={"run": run_dir},
                      note=SMOKE_NOTE if quick else None)
        results.append(r)
    return write_report(out, results, walls, quick, model, overrides.get("inner_bn", "adapt"))


def write_report(out, results, walls, quick, model="mlp", inner_bn="adapt"):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # Linux: KiB -> MiB
    row = "conv" if model == "conv" else "MLP"
    lines = ["# mamlnp reproduce omniglot: 5-way few-shot classification (Finn et al. 2017, "
             f"sec. 5.2, Table 1, {row} row)", ""]
    if inner_bn == "fixed":
        lines += ["--inner-bn fixed: batch norm's γ, β learned in the outer loop only "
                  "(cbfinn/maml's convention), not adapted in the inner loop.", ""]
    if quick:
        lines += ["**--quick: a smoke test with few iterations, NOT a reproduction.**", ""]
    lines += [f"| 5-way | steps | test accuracy % (mean ± 95% CI, {len(results[0]['accuracy'])} "
              f"episodes) | paper (Table 1, {row}) |",
              "|---|---:|---:|---:|"]
    for r in results:
        paper = CL.PAPER_TABLE1[model][(5, r["shots"])]
        for row in r["rows"]:
            if row["steps"] in TABLE_STEPS:
                lines.append(f"| {r['shots']}-shot | {row['steps']} | {100 * row['mean']:.1f} ± "
                             f"{100 * row['ci95']:.1f} | {paper[0]} ± {paper[1]} |")
    lines += ["", "Steps: 1 is the training protocol, 3 the paper's test (appendix A.1), 10 "
              "cbfinn/maml main.py's test_num_updates.", ""]
    for r in results:
        lines.append(f"- 5-way {r['shots']}-shot: {r['iterations']} iterations, training wall "
                     f"time {walls[r['shots']]:.0f} s, evaluation {r['eval_seconds']:.0f} s")
    lines.append(f"- peak memory of this process (max RSS): {rss:.0f} MiB")
    from .rundir import atomic_write, make_output_dir
    path = os.path.join(make_output_dir(out), "results.md")
    text = ("\n".join(lines) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))        # never through a link; old kept whole
    print("\n".join(lines))
    return path


def run_reproduce(args):
    """``mamlnp reproduce omniglot`` (options of mamlnp.run.reproduce)."""
    refuse_options(args, {"shots": "it trains 5-way 1-shot and 5-shot, both",
                          "init": "the protocol's initialisation is used: N(0, 0.01²) for "
                                  "the MLP, ConvNet.init's for the ConvNet"},
                   "reproduce omniglot")
    model = getattr(args, "model", None) or "mlp"
    fixed = getattr(args, "inner_bn", None) == "fixed"          # the two runs' inner_bn
    if args.iterations is not None and args.quick:
        raise InputError("--iterations and --quick: expected at most one of them")
    iterations = QUICK_ITERATIONS if args.quick else args.iterations
    if args.resume and args.overwrite:
        raise InputError("--resume and --overwrite: expected at most one of them")
    name = "reproduce-omniglot" + ("-conv" if model == "conv" else "") + (
        "-bnfixed" if fixed else "")
    out = args.out or os.path.join("runs", name + ("-quick" if args.quick else ""))
    progress = not args.no_progress and sys.stderr.isatty()
    if args.quick:
        print(f"[reproduce] --quick: {QUICK_ITERATIONS} iterations per run, a smoke test of the "
              f"pipeline, NOT a result", flush=True)
    from .train import TrainingInterrupted
    try:
        path = reproduce_omniglot(out, iterations, args.seed, args.backend,
                                  getattr(args, "data_dir", None), not args.overwrite,
                                  args.overwrite, progress, args.quick, model=model,
                                  **({"inner_bn": "fixed"} if fixed else {}))
    except TrainingInterrupted as exc:      # the checkpoint is written: say how to continue
        print(f"mamlnp reproduce: {exc}\nmamlnp reproduce: to continue both runs, run the same "
              f"command again: {_again(args, out)}", file=sys.stderr)
        return 128 + int(exc.signum)
    print(f"\n[reproduce] wrote {path}" + (" (--quick: a smoke test, not a result)"
                                             if args.quick else ""))
    return 0


def _again(args, out):
    """The command line that continues an interrupted ``reproduce omniglot``."""
    cmd = ["python -m mamlnp reproduce omniglot"]
    if getattr(args, "model", None) == "conv":
        cmd.append("--model conv")
    if getattr(args, "inner_bn", None) == "fixed":
        cmd.append("--inner-bn fixed")
    if args.quick:
        cmd.append("--quick")
    elif args.iterations is not None:
        cmd.append(f"--iterations {args.iterations}")
    for opt in ("out", "data_dir", "backend"):
        if getattr(args, opt, None) is not None:
            value = out if opt == "out" else getattr(args, opt)
            cmd.append(f"--{opt.replace('_', '-')} {shlex.quote(str(value))}")
    if args.seed != 0:
        cmd.append(f"--seed {args.seed}")
    return " ".join(cmd)
