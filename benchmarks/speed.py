"""Speed benchmark: how fast ppo.py trains CartPole-v1 on this machine, whole process.

    python benchmarks/speed.py                 # everything below (about 10 minutes on 2 cores)
    python benchmarks/speed.py --only sps      # or: envs, solve

Prints three tables:
- sps:   steps per second over the whole process (start-up included) at CleanRL's default
         hyperparameters (4 envs x 128 steps), median of --repeats runs of --steps steps,
         and the peak resident memory of the process;
- envs:  the same for num_envs = 1, 4, 16, 64, 256 (one run each, num_steps 128);
- solve: wall seconds from process start until the mean of the last 20 episodic returns
         first reaches 475, with the fast configuration (FAST_FLAGS), seeds 1-5: each seed,
         the median and the max.
Runs go one at a time: never run this beside another timing job (or tests).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

PPO = Path(__file__).resolve().parents[1] / "ppo.py"
# The fast CartPole configuration (README, "Fast configuration"): many cheap numpy envs, short
# rollouts, few large minibatches, a higher learning rate, no entropy bonus.
FAST_FLAGS = ["--num-envs", "32", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "5",
              "--learning-rate", "3e-3", "--gamma", "0.98", "--gae-lambda", "0.8", "--ent-coef", "0",
              "--total-timesteps", "100000"]


def run_ppo(flags, workdir, ppo=PPO):
    """Run ppo.py once; returns (wall seconds, start time, peak RSS in MiB, run directory)."""
    start = time.time()
    proc = subprocess.Popen([sys.executable, str(ppo), *flags], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone
    wall = time.time() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"ppo.py {' '.join(flags)} failed:\n{proc.stderr.read()}")
    run_dir = max((Path(workdir) / "runs").iterdir(), key=os.path.getmtime)
    return wall, start, usage.ru_maxrss / 1024, run_dir


def time_to_solve(run_dir, start, threshold=475.0, window=20):
    """Seconds from `start` until the mean of the last `window` returns first reaches threshold."""
    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    returns = events.Scalars("charts/episodic_return")
    values = np.array([e.value for e in returns])
    for i in range(window, len(values) + 1):
        if values[i - window:i].mean() >= threshold:
            return returns[i - 1].wall_time - start
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["sps", "envs", "solve"], action="append")
    parser.add_argument("--steps", type=int, default=100_000, help="timesteps per SPS run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--env-counts", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    cli = parser.parse_args()
    parts = cli.only or ["sps", "envs", "solve"]
    workdir = tempfile.mkdtemp(prefix="ppo-speed-")
    print(f"# ppo.py speed, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}\n")

    if "sps" in parts:
        results = [run_ppo(["--total-timesteps", str(cli.steps)], workdir) for _ in range(cli.repeats)]
        sps = [cli.steps // 512 * 512 / wall for wall, *_ in results]
        print(f"CleanRL defaults (4 envs x 128 steps), {cli.steps:,} steps, {cli.repeats} runs, whole process:")
        print(f"  SPS median {statistics.median(sps):,.0f} (runs: {', '.join(f'{s:,.0f}' for s in sps)}), "
              f"wall median {statistics.median(w for w, *_ in results):.1f} s, "
              f"peak memory {max(m for _, _, m, _ in results):.0f} MiB\n")

    if "envs" in parts:
        print("| num_envs | steps | SPS (whole process) | wall s | peak MiB |\n|---|---|---|---|---|")
        for num_envs in cli.env_counts:
            batch = num_envs * 128
            steps = max(cli.steps, 4 * batch) // batch * batch
            wall, _, mem, _ = run_ppo(["--num-envs", str(num_envs), "--total-timesteps", str(steps)], workdir)
            print(f"| {num_envs} | {steps:,} | {steps / wall:,.0f} | {wall:.1f} | {mem:.0f} |", flush=True)
        print()

    if "solve" in parts:
        print(f"Time to solve (mean of last 20 returns >= 475), fast configuration:\n  {' '.join(FAST_FLAGS)}")
        times = []
        for seed in cli.seeds:
            wall, start, _, run_dir = run_ppo(FAST_FLAGS + ["--seed", str(seed)], workdir)
            times.append(time_to_solve(run_dir, start))
            print(f"  seed {seed}: {times[-1]:.1f} s (whole run {wall:.1f} s)", flush=True)
        solved = [t for t in times if not np.isnan(t)]
        print(f"  solved {len(solved)}/{len(times)}; median {statistics.median(times):.1f} s, "
              f"max {max(times):.1f} s")


if __name__ == "__main__":
    main()
