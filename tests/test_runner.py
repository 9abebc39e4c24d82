"""benchmarks/run.py: the score function alone, then the whole runner on tiny runs."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RUNNER = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
TINY = "--num-envs 2 --num-steps 64 --total-timesteps 1024"

# benchmarks/ is no package: load the script by path.
_spec = importlib.util.spec_from_file_location("benchmark_runner", RUNNER)
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)


def run_runner(out, *args):
    return subprocess.run([sys.executable, str(RUNNER), "--env-ids", "CartPole-v1", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=300)


def table_row(results_md, env_id, variant):
    """The cells of the results table's row for (env_id, variant)."""
    for line in results_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == [env_id, variant]:
            return cells
    raise AssertionError(f"no row for {env_id} / {variant} in:\n{results_md}")


def test_final_score_is_mean_of_last_100():
    returns = np.arange(150.0)  # the last 100 are 50..149, mean 99.5
    assert runner.final_score(returns) == pytest.approx(99.5)
    assert runner.final_score([10.0, 20.0, 60.0]) == pytest.approx(30.0)  # fewer than 100: all of them
    assert np.isnan(runner.final_score([]))


@pytest.mark.slow
def test_runner_two_seeds(tmp_path):
    proc = run_runner(tmp_path, "--seeds", "1", "2", "--workers", "2", "--extra", TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    row = table_row((tmp_path / "results.md").read_text(), "CartPole-v1", "default")
    mean, std = map(float, re.fullmatch(r"(\S+) ± (\S+)", row[2]).groups())
    per_seed = dict(re.findall(r"(\d+): (-?[\d.]+)", row[3]))
    assert sorted(per_seed) == ["1", "2"]
    scores = [float(s) for s in per_seed.values()]
    assert mean == pytest.approx(np.mean(scores), abs=0.01)  # the cells are rounded to 2 decimals
    assert std == pytest.approx(np.std(scores), abs=0.01)

    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000

    run_dirs = sorted((tmp_path / "runs").iterdir())
    assert [d.name.split("__")[:3] for d in run_dirs] == [["CartPole-v1", "default", "1"],
                                                          ["CartPole-v1", "default", "2"]]
    assert all(list(d.glob("events.out.tfevents.*")) for d in run_dirs)


@pytest.mark.slow
def test_failed_run_is_reported(tmp_path):
    proc = run_runner(tmp_path, "--seeds", "1", "--variant", "bad=--gamma 2", "--extra", TINY)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = table_row((tmp_path / "results.md").read_text(), "CartPole-v1", "bad")
    assert row[2] == "failed"
    assert "FAILED" in row[3] and "logs/bad__CartPole-v1__1.log" in row[3]
    log = (tmp_path / "logs" / "bad__CartPole-v1__1.log").read_text()
    assert "gamma" in log.split("\n", 1)[1]  # ppo.py's error, below the command line the log starts with


def test_core_slots_split_the_cores_between_workers():
    assert runner.core_slots({3, 1, 2, 0}, 2) == [[0, 1], [2, 3]]
    assert runner.core_slots(range(5), 2) == [[0, 1], [2, 3]]  # the odd core is left out
    assert runner.core_slots(range(2), 1) == [[0, 1]]
    assert runner.core_slots(range(2), 3) == []  # more workers than cores: no pinning


@pytest.mark.skipif(not hasattr(runner.os, "sched_setaffinity"), reason="core affinity is Linux's")
def test_each_run_starts_on_its_workers_cores(tmp_path, monkeypatch):
    """A child started by a worker runs on that worker's share only, which ppo.py's torch_threads then
    counts (an image run on 2 cores with 2 workers: 1 thread each, not 2 fighting for one core)."""
    fake_ppo = tmp_path / "fake_ppo.py"
    fake_ppo.write_text("import os\nprint('cores', sorted(os.sched_getaffinity(0)))\n")
    monkeypatch.setattr(runner, "PPO", fake_ppo)
    first_core = min(runner.os.sched_getaffinity(0))
    slots = runner.queue.Queue()
    slots.put([first_core])
    run = runner.Run("default", [], "CartPole-v1", 1, tmp_path / "run.log")
    with runner.ThreadPoolExecutor(max_workers=1) as pool:  # a worker thread, as in main
        pool.submit(runner.run_one, run, tmp_path, [], 1, slots).result()
    assert f"cores [{first_core}]" in run.log.read_text()
    assert slots.get_nowait() == [first_core]  # given back for the next run
    assert runner.os.sched_getaffinity(0) != {first_core} or runner.os.cpu_count() == 1  # this thread: untouched
