"""Memory benchmark: ppo.py with and without --recurrent on envs that need a memory, beside sb3-contrib.

    python benchmarks/memory.py --seeds 1 2 3 4 5 --sb3-python ../sb3-venv/bin/python   # CartPoleNoVel (about 30 min)
    python benchmarks/memory.py --env popgym --seeds 1 2 3                            # POPGym's RepeatPreviousEasy

- cartpole: CartPoleNoVel-v1 (benchmarks/memory_envs.py: CartPole-v1, velocities hidden), 100k steps.
  Three trainers per seed, alternating, one at a time, whole process: ppo.py without a memory, ppo.py
  --recurrent lstm, and (--sb3-python) sb3-contrib's RecurrentPPO at rl-zoo's settings for this env
  (benchmarks/sb3_recurrent.py). ppo.py takes the same settings where it has the flag (MEMORY_FLAGS:
  8 envs x 32 steps, one minibatch, lr 1e-3 annealed, gamma 0.98, lambda 0.8, no entropy
  bonus, normalised observations and rewards, 64 wide, no value clipping); what it does not share:
  one recurrent layer under both heads (RecurrentPPO: an LSTM each), two hidden layers of 64 (one),
  the clip range constant (annealed), tanh and orthogonal init (ReLU, torch's), and 10 epochs (20).
  Those two were screened on seed 1 (greedy eval over 20 episodes, LSTM of 64): rl-zoo's networks
  276, tanh and orthogonal 413, and 10 epochs 500 (2 minibatches of 20 epochs: 500 too; a GRU at 20
  epochs: 500; an LSTM of 128: 358; 200k steps at 20 epochs: 332). ppo.py runs with --recurrent gru too.
- popgym: POPGym's RepeatPreviousEasy (popgym 1.0.7; pip install popgym): each step shows one of 4
  suits, and the action must name the suit shown 4 steps before; 51 steps, 48 of them scored +-1/48,
  so a perfect memory scores 1.0 and guessing -0.5 on average. ppo.py with and without --recurrent,
  1M steps, 16 envs x 128 steps, lr 1e-3, no entropy bonus (screened on seed 1 at 500k steps: lr 1e-3
  reached a training mean of 0.95, CleanRL's 2.5e-4 -0.06 at 300k).

Each run's score: the greedy policy's mean return over --eval-episodes episodes after training (its
memory carried through each episode), and the mean of its last 100 training episodes. Wall and CPU
seconds (user + system) of the whole process, with the median of the per-seed ratios to ppo.py
--recurrent. Nothing else may run beside it while it times.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
PPO, SB3 = ROOT / "ppo.py", ROOT / "benchmarks" / "sb3_recurrent.py"

# rl-zoo's ppo_lstm.yml settings for CartPoleNoVel-v1 in ppo.py's flags (see the docstring for what differs)
MEMORY_FLAGS = ["--num-envs", "8", "--num-steps", "32", "--num-minibatches", "1", "--update-epochs", "10",
                "--learning-rate", "1e-3", "--gamma", "0.98", "--gae-lambda", "0.8", "--ent-coef", "0",
                "--norm-obs", "--norm-reward", "--hidden-size", "64", "--recurrent-size", "64", "--no-clip-vloss",
                "--total-timesteps", "100000"]
ENVS = {
    "cartpole": ("memory_envs:CartPoleNoVel-v1", MEMORY_FLAGS),
    "popgym": ("popgym:popgym-RepeatPreviousEasy-v0", ["--total-timesteps", "1000000", "--num-envs", "16",
                                                       "--num-steps", "128", "--ent-coef", "0", "--learning-rate", "1e-3"]),
}


def run(command, workdir):
    """One trainer in workdir: wall and CPU seconds (user + system, whole process) and the run directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    before = set((workdir / "runs").glob("*"))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks"))
    start = time.time()
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{proc.stderr.read()}")
    (run_dir,) = set((workdir / "runs").glob("*")) - before
    return dict(wall=wall, cpu=usage.ru_utime + usage.ru_stime, run_dir=run_dir)


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    return np.array([e.value for e in events.Scalars(tag)]) if tag in events.Tags()["scalars"] else np.zeros(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=list(ENVS), default="cartpole")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--sb3-python", help="a Python with sb3-contrib (cartpole only): adds RecurrentPPO")
    parser.add_argument("--total-timesteps", type=int, help="instead of the env's budget (a quick look)")
    parser.add_argument("--out", type=Path, default=Path("memory_benchmark"))
    cli = parser.parse_args()
    env_id, flags = ENVS[cli.env]
    if cli.total_timesteps:
        flags = flags + ["--total-timesteps", str(cli.total_timesteps)]
    common = [sys.executable, str(PPO), "--env-id", env_id, *flags, "--eval-episodes", str(cli.eval_episodes),
              "--checkpoint-every", "0"]
    trainers = {"ppo.py --recurrent lstm": lambda seed: common + ["--seed", str(seed), "--recurrent", "lstm"],
                "ppo.py --recurrent gru": lambda seed: common + ["--seed", str(seed), "--recurrent", "gru"],
                "ppo.py, no memory": lambda seed: common + ["--seed", str(seed)]}
    if cli.sb3_python and cli.env == "cartpole":
        trainers["sb3-contrib RecurrentPPO"] = lambda seed: [
            cli.sb3_python, str(SB3), "--seed", str(seed), "--eval-episodes", str(cli.eval_episodes)] + (
            ["--total-timesteps", str(cli.total_timesteps)] if cli.total_timesteps else [])
    results = {name: [] for name in trainers}
    for i, seed in enumerate(cli.seeds):
        order = list(trainers) if i % 2 == 0 else list(reversed(trainers))  # alternate who goes first
        for name in order:
            result = run(trainers[name](seed), cli.out / name.replace(",", "").replace(" ", "_"))
            result.update(seed=seed, eval=scalars(result["run_dir"], "eval/episodic_return").mean(),
                          train=scalars(result["run_dir"], "charts/episodic_return")[-100:].mean())
            results[name].append(result)
            print(f"seed {seed}  {name:26s} eval {result['eval']:8.2f}  last 100 {result['train']:8.2f}  "
                  f"wall {result['wall']:6.1f} s  CPU {result['cpu']:6.1f} s", flush=True)
    reference = results["ppo.py --recurrent lstm"]
    print(f"\n{env_id}, seeds {' '.join(map(str, cli.seeds))}, greedy eval over {cli.eval_episodes} episodes\n")
    print("| trainer | eval, each seed | eval mean ± std | last 100 mean | wall s (median) | CPU s (median) "
          "| wall / ppo.py lstm | CPU / ppo.py lstm |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        evals = np.array([r["eval"] for r in rows])
        wall_ratio = statistics.median(r["wall"] / ref["wall"] for r, ref in zip(rows, reference))
        cpu_ratio = statistics.median(r["cpu"] / ref["cpu"] for r, ref in zip(rows, reference))
        print(f"| {name} | {', '.join(f'{e:.1f}' for e in evals)} | {evals.mean():.2f} ± {evals.std():.2f} | "
              f"{np.mean([r['train'] for r in rows]):.2f} | {statistics.median(r['wall'] for r in rows):.1f} | "
              f"{statistics.median(r['cpu'] for r in rows):.1f} | {wall_ratio:.2f} | {cpu_ratio:.2f} |")


if __name__ == "__main__":
    main()
