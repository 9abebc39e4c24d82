"""benchmarks/bare_loop.py, speed.py --bare and compare.py: the floor computes what ppo.py computes,
and the scripts print the figures docs/speed.md quotes."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppo

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# benchmarks/ is no package: load the script by path.
_spec = importlib.util.spec_from_file_location("bare_loop", BENCHMARKS / "bare_loop.py")
bare_loop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bare_loop)


def test_bare_loop_ends_with_ppo_py_weights(in_tmp):
    """The bare loop is a floor of ppo.py, not a cheaper algorithm: 3 iterations from the same seed end
    with the same weights, bit for bit, as train()."""
    args = ppo.Args(env_id="CartPole-v1", total_timesteps=3 * 512, seed=5)
    trained = ppo.train(args).state_dict()
    bare = bare_loop.bare_train(args).state_dict()
    assert list(bare) == list(trained)
    for name in trained:
        assert torch.equal(bare[name], trained[name]), name
    assert not torch.equal(trained["actor.0.weight"], ppo.Agent(ppo.make_envs(args, 1)).state_dict()["actor.0.weight"])


@pytest.mark.slow
def test_speed_peers_with_the_bare_loop(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "speed.py"), "--only", "peers", "--bare",
                           "--peer-steps", "1024", "--repeats", "2"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines() if line.startswith("| ppo"))}
    assert set(rows) == {"ppo.py", "ppo.py bare loop"}
    assert float(rows["ppo.py"][0]) > 0 and float(rows["ppo.py bare loop"][0]) > 0  # wall seconds
    assert rows["ppo.py bare loop"][3:] == ["-", "-"]  # it logs no episodes: no time to solve, no final mean
    assert float(rows["ppo.py"][4]) > 0  # ppo.py's final mean return
    for key in ("wall", "cpu"):
        ratio = re.search(rf"ppo.py bare loop / ppo.py, {key}: median of the per-round ratios (\S+)x \((\S+), (\S+)\)",
                          proc.stdout)
        assert ratio, proc.stdout
        assert float(ratio[1]) == pytest.approx((float(ratio[2]) + float(ratio[3])) / 2, abs=0.01)  # median of 2


@pytest.mark.slow
def test_compare_prints_wall_and_cpu_ratios(tmp_path):
    """B is ppo.py behind a 2 s sleep: slower on the wall clock, not in CPU time."""
    ppo_py = BENCHMARKS.parent / "ppo.py"
    sleepy = tmp_path / "sleepy_ppo.py"
    sleepy.write_text(f"import runpy, time\ntime.sleep(2)\nrunpy.run_path({str(ppo_py)!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "compare.py"), str(ppo_py), str(sleepy), "--runs", "1",
                           "--", "--total-timesteps", "512"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = {}
    for key in ("wall", "cpu"):
        line = re.search(rf"median {key}: a (\S+) s, b (\S+) s; median ratio a/b (\S+)", proc.stdout)
        assert line, proc.stdout
        figures[key] = a, b, ratio = tuple(map(float, line.groups()))
        assert ratio == pytest.approx(a / b, abs=0.1)  # the seconds are rounded to 0.1
    (wall_a, wall_b, wall_ratio), (cpu_a, cpu_b, cpu_ratio) = figures["wall"], figures["cpu"]
    assert wall_b - wall_a > 1.5 and wall_ratio < 0.8
    assert abs(cpu_b - cpu_a) < 1.0 and cpu_ratio > 0.6
