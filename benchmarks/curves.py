"""Curves and final scores of any runs that log `charts/episodic_return` (ppo.py's, sb3_ppo.py's, sb3_atari.py's).

    python benchmarks/curves.py --out docs/atari_breakout.png \\
        ppo.py=runs/BreakoutNoFrameskip-v4__ppo__1__1796106890 \\
        "SB3 PPO, rl-zoo's Atari settings"=runs/BreakoutNoFrameskip-v4__sb3_ppo__1__1796106889

Prints, for each run, the mean of the last 100 episodes at each of --points the run reached (250k,
500k and 750k steps unless given) and at the end (the guide's final score), and plots the running
mean of the last 100 episodes against env steps.
"""

import argparse
import sys

try:
    import matplotlib
except ImportError:  # before any work, as ppo.py does for its extras
    sys.exit("error: benchmarks/curves.py draws its curves with matplotlib: pip install -r requirements-dev.txt")

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def episodes(run_dir):
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    returns = events.Scalars("charts/episodic_return")
    return np.array([e.step for e in returns]), np.array([e.value for e in returns])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", default="curves.png")
    parser.add_argument("--title", default="")
    parser.add_argument("--points", nargs="+", type=int, default=[250_000, 500_000, 750_000],
                        help="env steps at which to print the mean of the last 100 episodes")
    cli = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in cli.runs:
        label, run_dir = run.split("=", 1)
        steps, returns = episodes(run_dir)
        last_100 = np.array([returns[max(0, i - 99):i + 1].mean() for i in range(len(returns))])
        marks = [f"{point // 1000:,}k: {last_100[steps <= point][-1]:.2f}" for point in cli.points
                 if (steps <= point).any() and point <= steps[-1]]  # not past the run's last episode
        print(f"{label}: {len(returns)} episodes to step {steps[-1]:,}; mean of the last 100 at "
              f"{', '.join(marks)}; at the end {last_100[-1]:.2f}")
        ax.plot(steps, last_100, label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episodic return, mean of the last 100")
    ax.set_title(cli.title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(cli.out, dpi=100)
    print(f"plot: {cli.out}")


if __name__ == "__main__":
    main()
