"""Speed benchmark: ppo.py on CartPole-v1, whole process, and side by side with CleanRL and SB3.

    python benchmarks/speed.py                     # ppo.py alone: sps, envs, solve (about 5 minutes)
    python benchmarks/speed.py --only peers --cleanrl ../cleanrl/cleanrl/ppo.py \\
        --cleanrl-python ../cleanrl-venv/bin/python --sb3       # beside CleanRL and SB3 (about 15 minutes)
    python benchmarks/speed.py --only peers --env-id Hopper-v4 --peer-steps 200000 \\
        --cleanrl ../cleanrl/cleanrl/ppo_continuous_action.py --cleanrl-python ../cleanrl-venv/bin/python \\
        --before /tmp/ppo_before.py     # the Box path beside CleanRL's continuous script (and an older ppo.py)

Parts (--only picks some; by default all, with peers only when --cleanrl or --sb3 is given):
- peers: ppo.py, CleanRL's ppo.py (--cleanrl) and Stable-Baselines3's PPO (--sb3, run by
         benchmarks/sb3_ppo.py with CleanRL's hyperparameters), all at CleanRL's defaults (4 envs x
         128 steps, --peer-steps steps, seed 1), alternating (ours, CleanRL, SB3, ours, ...) for
         --repeats rounds: wall and CPU seconds, medians, the median of the per-round ratios, how
         many cores each used (CPU / wall), time to solve and the final mean return of each run.
         --env-id runs them on another env (a Box env: ppo.py takes ppo_continuous_action.py's
         defaults, and --cleanrl names that script; an Atari game: --cleanrl names ppo_atari.py, and
         --sb3 runs benchmarks/sb3_atari.py); --before adds an earlier ppo.py to the rounds.
         --bare adds benchmarks/bare_loop.py to the rounds: ppo.py's own pieces in its loop with
         nothing around them (no logging, no checks, no checkpoints), the floor of its design;
         --env-only adds `bare_loop.py --env-only`: the env stack alone, random actions, no agent,
         what every trainer that steps these wrappers pays.
- sps:   ppo.py alone, --repeats runs of --steps steps: steps per second and peak memory.
- envs:  ppo.py with num_envs = 1, 4, 16, 64, 256 (one run each, num_steps 128).
- procs: ppo.py under torchrun (gloo) with 2 and 4 processes against plain `python ppo.py`, at
         CleanRL's defaults in each process (4 envs x 128 steps each: --num-envs 4N), alternating,
         --repeats rounds of --steps steps per process: steps per second of the whole job.
- solve: wall seconds from process start until the mean of the last 20 episodic returns first
         reaches 475, for ppo.py's fast configuration (FAST_FLAGS: the CartPole preset), seeds
         --seeds; with --cleanrl, each seed alternates with a CleanRL run at its defaults, and the
         ratio of the medians is printed.
A claim against a peer is a ratio measured in one run of this script: absolute figures move by
1.5x or more between machines and days. Runs go one at a time: never run this beside another
timing job (or tests).

CleanRL's script is cleanrl/ppo.py of github.com/vwxyzjn/cleanrl (not its PyPI wheel), run in a venv
of its own: python -m venv cleanrl-venv && cleanrl-venv/bin/pip install "gymnasium==0.29.1"
"numpy<2" torch==2.13.0 tensorboard tyro, and for its continuous script on MuJoCo "mujoco==2.3.7"
imageio (docs/speed.md, "Measure it yourself").
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ppo import is_atari  # noqa: E402  (ale-py's registry: an Atari id for sb3_atari.py)

ROOT = Path(__file__).resolve().parents[1]
PPO = ROOT / "ppo.py"
SB3 = ROOT / "benchmarks" / "sb3_ppo.py"
SB3_ATARI = ROOT / "benchmarks" / "sb3_atari.py"  # rl-zoo's Atari settings, for an Atari env id
BARE = ROOT / "benchmarks" / "bare_loop.py"
# The fast CartPole configuration is its preset (PRESETS in ppo.py): 8 envs x 32 steps, one minibatch
# reused for 20 epochs, lr 1e-3, gamma 0.98, lambda 0.8, unclipped value loss, 100k steps. Its greedy
# policy scores 500 for seeds 1-10; the faster-on-average 32 envs x 16 steps at lr 3e-3 (5 epochs)
# failed one seed in five.
FAST_FLAGS = ["--env-id", "CartPole-v1", "--preset", "tuned"]
CPU = ["--no-cuda"]  # every trainer on the CPU, also where a GPU is (SB3's and the bare loop's scripts use only it)


def run(command, workdir):
    """Run a trainer once in workdir. Returns a dict: wall and CPU seconds (user + system, of the process
    and any children it waited for), start time, peak RSS in MiB, and the run directory it wrote (None
    if it wrote none)."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    before = set((Path(workdir) / "runs").glob("*"))
    start = time.time()
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child (and its waited-for children)
    wall = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{proc.stderr.read()}")
    new_dirs = set((Path(workdir) / "runs").glob("*")) - before
    run_dir = new_dirs.pop() if new_dirs else None
    return dict(wall=wall, cpu=usage.ru_utime + usage.ru_stime, start=start, rss=usage.ru_maxrss / 1024,
                run_dir=run_dir)


def episodes(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    events.Reload()
    return events.Scalars("charts/episodic_return")


def time_to_solve(run_dir, start, threshold=475.0, window=20):
    """Seconds from `start` until the mean of the last `window` returns first reaches threshold."""
    returns = episodes(run_dir)
    values = np.array([e.value for e in returns])
    for i in range(window, len(values) + 1):
        if values[i - window:i].mean() >= threshold:
            return returns[i - 1].wall_time - start
    return float("nan")


def final_mean(run_dir, last=100):
    return float(np.mean([e.value for e in episodes(run_dir)][-last:]))


def median(values):
    values = [v for v in values if not np.isnan(v)]
    return statistics.median(values) if values else float("nan")


def peers(cli, workdir):
    """ppo.py, CleanRL and SB3 at CleanRL's defaults, alternating. Returns the per-trainer results."""
    steps = ["--total-timesteps", str(cli.peer_steps), "--seed", "1"]
    if cli.env_id != "CartPole-v1":  # (both ppo.py and CleanRL's continuous script default to others)
        steps += ["--env-id", cli.env_id]
    trainers = {"ppo.py": [sys.executable, str(PPO), *steps, *CPU]}
    if cli.before:
        trainers["ppo.py before"] = [sys.executable, str(Path(cli.before).resolve()), *steps, *CPU]
    if cli.bare:
        trainers["ppo.py bare loop"] = [sys.executable, str(BARE), *steps]  # CPU only, like SB3's script
    if cli.env_only:
        trainers["env stack alone"] = [sys.executable, str(BARE), *steps, "--env-only"]
    if cli.cleanrl:
        trainers["CleanRL ppo.py"] = [cli.cleanrl_python, str(Path(cli.cleanrl).resolve()), *steps, *CPU]
    if cli.sb3:
        trainers["SB3 PPO"] = [sys.executable, str(SB3_ATARI if is_atari(cli.env_id) else SB3), *steps]
    results = {name: [] for name in trainers}
    for round_ in range(cli.repeats):
        for name, command in trainers.items():
            result = run(command, Path(workdir) / name.replace(" ", "_"))
            logged = result["run_dir"] is not None  # the bare loop (and the env alone) log nothing
            cartpole = cli.env_id == "CartPole-v1"  # (time to solve: CartPole's 475)
            result["solve"] = time_to_solve(result["run_dir"], result["start"]) if logged and cartpole else float("nan")
            result["final"] = final_mean(result["run_dir"]) if logged else float("nan")
            results[name].append(result)
            print(f"  round {round_ + 1} {name}: wall {result['wall']:.1f} s, CPU {result['cpu']:.1f} s, "
                  f"solved in {result['solve']:.1f} s, final {result['final']:.1f}", flush=True)
    print(f"\n{cli.env_id}, CleanRL's defaults, {cli.peer_steps:,} steps, seed 1, {cli.repeats} alternating rounds, "
          f"whole process:\n")
    print("| trainer | wall s (median) | CPU s (median) | cores used | time to solve s (median) | final mean |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        wall, cpu = median([r["wall"] for r in runs]), median([r["cpu"] for r in runs])
        solve, final = median([r["solve"] for r in runs]), median([r["final"] for r in runs])
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu / wall:.2f} | "
              + " | ".join("-" if np.isnan(x) else f"{x:.1f}" for x in (solve, final)) + " |")
    pairs = [(name, "ppo.py") for name in results if name != "ppo.py"]
    per_round = [name for name in results if name != "ppo.py"]
    print(f"\nper round, wall s / CPU s: " + "; ".join(
        f"{i + 1}: " + ", ".join(f"{name} {results[name][i]['wall']:.1f} / {results[name][i]['cpu']:.1f}"
                                 for name in ["ppo.py", *per_round]) for i in range(cli.repeats)))
    if cli.bare:  # how far the peers are from the floor of ppo.py's design
        pairs += [(name, "ppo.py bare loop") for name in results if name.startswith(("CleanRL", "SB3"))]
    if cli.env_only:  # the most any trainer stepping this env stack could gain on the peers
        pairs += [(name, "env stack alone") for name in results if name.startswith(("CleanRL", "SB3"))]
    for name, ours in pairs:
        for key in ("wall", "cpu"):
            ratios = [peer[key] / mine[key] for peer, mine in zip(results[name], results[ours])]
            print(f"{name} / {ours}, {key}: median of the per-round ratios {median(ratios):.2f}x "
                  f"({', '.join(f'{r:.2f}' for r in ratios)})")
    print()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["peers", "sps", "envs", "procs", "solve"], action="append")
    parser.add_argument("--steps", type=int, default=100_000, help="timesteps per sps and envs run")
    parser.add_argument("--peer-steps", type=int, default=500_000, help="timesteps per peers run (CleanRL's total)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--env-counts", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--procs", type=int, nargs="+", default=[2, 4], help="torchrun process counts for procs")
    parser.add_argument("--cleanrl", help="path of CleanRL's cleanrl/ppo.py")
    parser.add_argument("--cleanrl-python", default=sys.executable, help="the Python of CleanRL's venv")
    parser.add_argument("--sb3", action="store_true", help="also run Stable-Baselines3 (pip install stable-baselines3)")
    parser.add_argument("--bare", action="store_true", help="also run benchmarks/bare_loop.py (peers only)")
    parser.add_argument("--env-only", action="store_true", help="also run bare_loop.py --env-only (peers only)")
    parser.add_argument("--env-id", default="CartPole-v1", help="the env of the peers part: a Box env (Hopper-v4) "
                        "with --cleanrl pointing at CleanRL's ppo_continuous_action.py")
    parser.add_argument("--before", help="an earlier ppo.py to add to the peers' rounds (before and after a change)")
    cli = parser.parse_args()
    parts = cli.only or (["peers"] if cli.cleanrl or cli.sb3 else []) + ["sps", "envs", "procs", "solve"]
    if "peers" in parts and not (cli.cleanrl or cli.sb3 or cli.bare or cli.before or cli.env_only):
        parser.error("--only peers needs --cleanrl PATH, --sb3, --bare, --env-only or --before PATH")
    if cli.sb3 and not (cli.env_id == "CartPole-v1" or is_atari(cli.env_id)):
        parser.error("--sb3 runs CartPole-v1 or an Atari game")
    workdir = tempfile.mkdtemp(prefix="ppo-speed-")
    print(f"# ppo.py speed, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}\n", flush=True)

    peer_results = peers(cli, workdir) if "peers" in parts else {}
    cleanrl_runs = peer_results.get("CleanRL ppo.py", [])

    if "sps" in parts:
        results = [run([sys.executable, str(PPO), "--total-timesteps", str(cli.steps), *CPU], Path(workdir) / "sps")
                   for _ in range(cli.repeats)]
        sps = [cli.steps // 512 * 512 / r["wall"] for r in results]
        print(f"ppo.py alone, CleanRL's defaults (4 envs x 128 steps), {cli.steps:,} steps, {cli.repeats} runs:")
        print(f"  SPS median {statistics.median(sps):,.0f} (runs: {', '.join(f'{s:,.0f}' for s in sps)}), "
              f"wall median {median([r['wall'] for r in results]):.1f} s, "
              f"peak memory {max(r['rss'] for r in results):.0f} MiB\n", flush=True)

    if "envs" in parts:
        reference = f"{cli.peer_steps / median([r['wall'] for r in cleanrl_runs]):,.0f}" if cleanrl_runs else None
        print("| num_envs | steps | SPS (whole process) | wall s | peak MiB |" + (" x CleanRL's default SPS |" if reference else ""))
        print("|---|---|---|---|---|" + ("---|" if reference else ""))
        for num_envs in cli.env_counts:
            batch = num_envs * 128
            steps = max(cli.steps, 4 * batch) // batch * batch
            r = run([sys.executable, str(PPO), "--num-envs", str(num_envs), "--total-timesteps", str(steps), *CPU],
                    Path(workdir) / "envs")
            ratio = f" {steps / r['wall'] / (cli.peer_steps / median([c['wall'] for c in cleanrl_runs])):.1f} |" \
                if reference else ""
            print(f"| {num_envs} | {steps:,} | {steps / r['wall']:,.0f} | {r['wall']:.1f} | {r['rss']:.0f} |{ratio}",
                  flush=True)
        if reference:
            print(f"(CleanRL's default run, measured above: {reference} steps/s whole process)")
        print()

    if "procs" in parts:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
        commands = {1: [sys.executable, str(PPO)]} | {n: [*torchrun, str(n), str(PPO)] for n in cli.procs}
        sps = {n: [] for n in commands}
        for _ in range(cli.repeats):
            for n, command in commands.items():
                steps = cli.steps * n // 512 * 512
                r = run([*command, "--num-envs", str(4 * n), "--total-timesteps", str(steps), *CPU],
                        Path(workdir) / "procs")
                sps[n].append(steps / r["wall"])
        print(f"Processes, CleanRL's defaults in each (4 envs x 128 steps), {cli.steps:,} steps per process, "
              f"{cli.repeats} alternating rounds, whole job:")
        for n, values in sps.items():
            print(f"  {n} process{'es under torchrun' if n > 1 else ' (python ppo.py)'}: SPS median "
                  f"{statistics.median(values):,.0f} ({', '.join(f'{v:,.0f}' for v in values)}), "
                  f"{statistics.median(values) / statistics.median(sps[1]):.2f}x one process")
        print(flush=True)

    if "solve" in parts:
        print(f"Time to solve (mean of last 20 returns >= 475), ppo.py's fast configuration:\n  {' '.join(FAST_FLAGS)}"
              + ("\n  alternating with CleanRL's ppo.py at its defaults, same seed" if cli.cleanrl else ""))
        times, cleanrl_times = [], []
        for seed in cli.seeds:
            r = run([sys.executable, str(PPO), *FAST_FLAGS, "--seed", str(seed), *CPU], Path(workdir) / "solve")
            times.append(time_to_solve(r["run_dir"], r["start"]))
            line = f"  seed {seed}: ppo.py {times[-1]:.1f} s (whole run {r['wall']:.1f} s)"
            if cli.cleanrl:
                c = run([cli.cleanrl_python, str(Path(cli.cleanrl).resolve()), "--seed", str(seed), *CPU],
                        Path(workdir) / "solve_cleanrl")
                cleanrl_times.append(time_to_solve(c["run_dir"], c["start"]))
                line += f"; CleanRL {cleanrl_times[-1]:.1f} s (whole run {c['wall']:.1f} s)"
            print(line, flush=True)
        solved = [t for t in times if not np.isnan(t)]
        print(f"  ppo.py solved {len(solved)}/{len(times)}; median {median(times):.1f} s, max {max(times):.1f} s")
        if cleanrl_times:
            solved = [t for t in cleanrl_times if not np.isnan(t)]
            print(f"  CleanRL solved {len(solved)}/{len(cleanrl_times)}; median {median(cleanrl_times):.1f} s; "
                  f"ratio of medians (CleanRL / ppo.py) {median(cleanrl_times) / median(times):.1f}x")


if __name__ == "__main__":
    main()
