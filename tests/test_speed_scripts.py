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


def test_bare_loop_on_a_box_env_ends_with_ppo_py_weights(in_tmp):
    """The same on a Box env at ppo_continuous_action.py's defaults (observation and reward normalisation,
    1 env, 10 epochs x 32 minibatches), shortened rollouts."""
    args = ppo.parse_args(["--env-id", "Pendulum-v1", "--total-timesteps", "768", "--num-steps", "256", "--seed", "3"])
    assert args.norm_obs and args.norm_reward and args.update_epochs == 10
    trained = ppo.train(args).state_dict()
    bare = bare_loop.bare_train(args).state_dict()
    assert list(bare) == list(trained) and "actor_logstd" in trained
    for name in trained:
        assert torch.equal(bare[name], trained[name]), name


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
    """B is ppo.py behind a 5 s sleep: slower on the wall clock, not in CPU time. (On a loaded machine both
    runs also wait for a core, so the test compares the time each spent off the CPU. Medians of 3 runs: one
    run's CPU time once came out 1 s above the other's in a fresh venv.)"""
    ppo_py = BENCHMARKS.parent / "ppo.py"
    sleepy = tmp_path / "sleepy_ppo.py"
    sleepy.write_text(f"import runpy, time\ntime.sleep(5)\nrunpy.run_path({str(ppo_py)!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "compare.py"), str(ppo_py), str(sleepy), "--runs", "3",
                           "--", "--total-timesteps", "512"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = {}
    for key in ("wall", "cpu"):
        line = re.search(rf"median {key}: a (\S+) s, b (\S+) s; median ratio a/b (\S+)", proc.stdout)
        assert line, proc.stdout
        figures[key] = a, b, ratio = tuple(map(float, line.groups()))
        assert ratio == pytest.approx(a / b, abs=0.1)  # the seconds are rounded to 0.1
    (wall_a, wall_b, wall_ratio), (cpu_a, cpu_b, cpu_ratio) = figures["wall"], figures["cpu"]
    assert (wall_b - cpu_b) - (wall_a - cpu_a) > 3.0 and wall_ratio < 0.8  # the sleep: off the CPU, on the clock
    assert abs(cpu_b - cpu_a) < 1.0 and cpu_ratio > 0.6


@pytest.mark.slow
def test_speed_peers_on_a_box_env_with_an_earlier_ppo_py(tmp_path):
    """--env-id and --before: a Box env at ppo_continuous_action.py's defaults, the earlier ppo.py in the
    rounds (here ppo.py behind a 5 s sleep), the bare loop and the env stack alone (which log nothing),
    per-round seconds and the ratio against ppo.py."""
    sleepy = tmp_path / "sleepy_ppo.py"
    sleepy.write_text(f"import runpy, time\ntime.sleep(5)\n"
                      f"runpy.run_path({str(BENCHMARKS.parent / 'ppo.py')!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "speed.py"), "--only", "peers", "--env-id", "Pendulum-v1",
                           "--before", str(sleepy), "--bare", "--env-only", "--peer-steps", "2048", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Pendulum-v1, CleanRL's defaults, 2,048 steps, seed 1, 1 alternating rounds" in proc.stdout
    rows = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines() if line.startswith("| ppo"))}
    assert set(rows) == {"ppo.py", "ppo.py before", "ppo.py bare loop"}
    assert rows["ppo.py"][3] == "-" and float(rows["ppo.py"][4]) < 0  # no time to solve; Pendulum's returns
    env_alone = re.search(r"\| env stack alone \| (\S+) \| (\S+) \| \S+ \| - \| - \|", proc.stdout)
    assert env_alone and 0 < float(env_alone[1]) < float(rows["ppo.py bare loop"][0]), proc.stdout
    wall = re.search(r"ppo.py before / ppo.py, wall: median of the per-round ratios (\S+)x", proc.stdout)
    assert wall and float(wall[1]) > 1.0, proc.stdout
    seconds = re.search(r"per round, wall s / CPU s: 1: ppo.py (\S+) / \S+, ppo.py before (\S+) / \S+", proc.stdout)
    assert seconds and float(seconds[2]) - float(seconds[1]) > 3, proc.stdout  # the 5 s sleep


def test_profile_of_a_real_run_accounts_for_its_wall_time(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "profile_step.py"), "--run", "--env-id", "Pendulum-v1",
                           "--num-steps", "256", "--num-minibatches", "4", "--update-epochs", "2",
                           "--total-timesteps", "512"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wall = float(re.search(r"train\(\) (\S+) s wall", proc.stdout)[1])
    rows = {cells[0]: (float(cells[1]), float(cells[2].rstrip("%"))) for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| where"))}
    layers = [name for name in rows if name.startswith(("vector:", "in each env:"))]
    assert layers[0] == "vector: ClipAndNormalize" and layers[-1] == "in each env: PendulumEnv"  # outermost to the env
    rounding = 0.0005 * (len(rows) + 1)  # each figure is rounded to 1 ms
    assert sum(rows[name][0] for name in layers) == pytest.approx(rows["env step, in all"][0], abs=rounding)
    parts = [name for name in rows if name != "env step, in all" and name not in layers]
    assert parts == ["rollout: policy (get_action)",
                     "after the rollout: its log-probs and values (get_action_and_value, get_value)",
                     "update: forward and loss", "update: backward",
                     "update: optimizer step", "other (storage, advantages, logging, progress, ...)"]
    # 2 batched passes of 256 samples against 16 minibatches of 64: the loss's own calls are not counted twice
    # (counted twice, the batched row would hold all of the update's forward passes and exceed their row)
    assert rows[parts[1]][0] < rows["update: forward and loss"][0] / 2
    total = rows["env step, in all"][0] + sum(rows[name][0] for name in parts)
    assert total == pytest.approx(wall, abs=rounding) and all(rows[name][0] > 0 for name in parts)


def test_curves_prints_the_mean_of_the_last_100_games_at_each_point(tmp_path):
    """benchmarks/curves.py on two runs written here: 150 episodes of return i at step 2,000 (i + 1),
    i = 0..149; and a shorter run. The figures docs/atari.md quotes, against the hand-computed means."""
    from torch.utils.tensorboard import SummaryWriter
    for name, episodes, scale in (("long", 150, 1.0), ("short", 30, -2.0)):
        with SummaryWriter(str(tmp_path / name)) as writer:
            for i in range(episodes):
                writer.add_scalar("charts/episodic_return", scale * i, 2_000 * (i + 1))
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "curves.py"), "--out", str(out),
                           f"ppo.py={tmp_path / 'long'}", f"short one={tmp_path / 'short'}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # steps <= 250k: episodes 0..124, the last 100 are 25..124 (mean 74.5); at the end 50..149 (99.5)
    assert "ppo.py: 150 episodes to step 300,000; mean of the last 100 at 250k: 74.50; at the end 99.50" in proc.stdout
    # fewer than 100 episodes: the mean of all of them, -2 x 14.5; no point past its last step
    assert "short one: 30 episodes to step 60,000; mean of the last 100 at ; at the end -29.00" in proc.stdout
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "curves.py"), f"ppo.py={tmp_path / 'long'}", "--out", str(out),
                           "--points", "20000", "1250000"], capture_output=True, text=True, timeout=120)
    assert "ppo.py: 150 episodes to step 300,000; mean of the last 100 at 20k: 4.50; at the end 99.50" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speed_refuses_peers_that_cannot_run_the_env(tmp_path):
    """--sb3 runs CartPole-v1 (sb3_ppo.py) or an Atari game (sb3_atari.py), not a Box env."""
    for flags in (["--sb3", "--env-id", "Pendulum-v1"], ["--sb3", "--env-id", "MinAtar/Breakout-v1"]):
        proc = subprocess.run([sys.executable, str(BENCHMARKS / "speed.py"), "--only", "peers", *flags],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2 and "--sb3 runs CartPole-v1 or an Atari game" in proc.stderr
    speed = importlib.util.spec_from_file_location("speed", BENCHMARKS / "speed.py")
    speed_module = importlib.util.module_from_spec(speed)
    speed.loader.exec_module(speed_module)
    assert speed_module.is_atari("ALE/Breakout-v5") and speed_module.is_atari("BreakoutNoFrameskip-v4")
    assert not speed_module.is_atari("Hopper-v5") and not speed_module.is_atari("MinAtar/Breakout-v1")
