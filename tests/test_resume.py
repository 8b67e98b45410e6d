"""Interrupted runs: the CLI in a subprocess is SIGKILLed, SIGINTed or SIGTERMed midway, then
``--resume``d; its final θ and history must equal an uninterrupted run's, bit for bit.
"""
import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import mamlnp

ITERATIONS = 300
BACKENDS = ["numpy"] + (["numba"] if importlib.util.find_spec("numba") else [])


def command(out, backend, *extra):
    return [sys.executable, "-m", "mamlnp", "train", "sinusoid", "--out", str(out),
            "--iterations", str(ITERATIONS), "--meta-batch", "5", "--checkpoint-every", "10",
            "--eval-every", "25", "--backend", backend, "--no-progress", *extra]


def start(out, backend, *extra):
    # Two runs go side by side on CI's 2 cores: one numba thread each, since parallel
    # kernels on an oversubscribed machine run ~10x slower (the bits do not change).
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    return subprocess.Popen(command(out, backend, *extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def interrupt_after_first_checkpoint(proc, out, sig, timeout=60.0):
    """Send ``sig`` to ``proc`` as soon as ``out/checkpoint.npz`` exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(out, "checkpoint.npz")):
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.002)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


def finish(proc):
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stdout


def assert_same_run(a, b):
    _, theta_a, cfg_a = mamlnp.load_checkpoint(a)
    _, theta_b, cfg_b = mamlnp.load_checkpoint(b)
    assert cfg_a["iteration"] == cfg_b["iteration"] == ITERATIONS
    assert theta_a.tobytes() == theta_b.tobytes()
    ha = np.genfromtxt(os.path.join(a, "history.csv"), delimiter=",", skip_header=1)
    hb = np.genfromtxt(os.path.join(b, "history.csv"), delimiter=",", skip_header=1)
    assert ha.shape == (ITERATIONS // 25, 3) and ha.tobytes() == hb.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_then_resume_gives_the_same_bits(tmp_path, backend):
    ref, cut = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = start(ref, backend)                     # runs alongside the killed one
    rc, _, _ = interrupt_after_first_checkpoint(start(cut, backend), cut, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    done = mamlnp.load_checkpoint(cut)[2]["iteration"]
    print(f"{backend}: killed; last checkpoint at iteration {done} of {ITERATIONS}")
    assert 10 <= done < ITERATIONS and done % 10 == 0
    finish(start(cut, backend, "--resume"))
    finish(reference)
    assert_same_run(ref, cut)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_or_sigterm_writes_a_checkpoint_and_exits_128_plus_signum(tmp_path, sig, code):
    ref, cut = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = start(ref, "numpy")
    rc, _, stderr = interrupt_after_first_checkpoint(start(cut, "numpy"), cut, sig)
    print(stderr.strip())
    assert rc == code, stderr
    assert "interrupted at iteration" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    done = mamlnp.load_checkpoint(cut)[2]["iteration"]
    assert f"interrupted at iteration {done};" in stderr and 10 <= done < ITERATIONS
    finish(start(cut, "numpy", "--resume"))
    finish(reference)
    assert_same_run(ref, cut)
