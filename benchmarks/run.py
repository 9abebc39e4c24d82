"""Learning benchmark: train ppo.py over envs x seeds x flag variants, then tabulate and plot.

    python benchmarks/run.py --env-ids CartPole-v1 Acrobot-v1 --seeds 1 2 3 --workers 2 \\
        --variant default="" --variant mc="--adv-estimator mc" --extra "--total-timesteps 100000"

Every run is its own `ppo.py` process, started with cwd=<out> so that its TensorBoard
directory lands in <out>/runs/; its console output goes to <out>/logs/<variant>__<env>__<seed>.log.
At most --workers runs go at once. After the last run, <out>/results.md gets a table of final
scores (mean of the last 100 episodic returns, mean ± std over seeds, as the guide's protocol
asks) and <out>/curves.png the learning curves. A run that fails is marked in the table and
makes the runner exit 1.

Wall times are measured around each process, so they include start-up and depend on how
many runs share the CPU: for speed comparisons use --workers 1 (see GUIDE.md section 4).

On Linux each worker runs its children on its own share of the cores (core_slots), so that
ppo.py, which gives an image run every core it may use, gives each of 2 runs on 2 cores one
thread, not two that fight the other run's (docs/atari.md, "Threads by workload").
"""

import argparse
import glob
import os
import queue
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

try:
    import matplotlib
except ImportError:  # before any work, as ppo.py does for its extras
    sys.exit("error: benchmarks/run.py draws its curves with matplotlib: pip install -r requirements-dev.txt")

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator  # noqa: E402

PPO = Path(__file__).resolve().parents[1] / "ppo.py"
RETURN_TAG = "charts/episodic_return"
EVAL_TAG = "eval/episodic_return"  # --eval-episodes: the greedy policy after training
LAST_EPISODES = 100  # final score = mean return of the last 100 episodes
SMOOTH_EPISODES = 20  # running-mean window for the curves
OWN_FLAGS = {"--env-id", "--seed", "--exp-name"}  # set by the runner for each run


@dataclass
class Run:
    variant: str
    flags: list[str]
    env_id: str
    seed: int
    log: Path
    wall_s: float = float("nan")
    error: str = ""  # why the run counts as failed; empty when it succeeded
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def eval_score(self) -> float:
        return float(self.eval_returns.mean()) if self.eval_returns.size else float("nan")

    @property
    def score(self) -> float:
        return final_score(self.returns)


# ---------------------------------------------------------------- pure pieces (tested alone)

def final_score(returns, last: int = LAST_EPISODES) -> float:
    """Mean of the last `last` episodic returns; NaN when no episode finished."""
    returns = np.asarray(returns, dtype=float)
    return float(returns[-last:].mean()) if returns.size else float("nan")


def running_mean(x, window: int = SMOOTH_EPISODES) -> np.ndarray:
    """Trailing mean over `window` values; the first values average what there is so far."""
    x = np.asarray(x, dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    ends = np.arange(1, x.size + 1)
    starts = np.maximum(0, ends - window)
    return (csum[ends] - csum[starts]) / (ends - starts)


def mean_curve(curves, n_points: int = 200):
    """Average (steps, returns) curves of several seeds: (grid, mean, std) over seeds.

    Each curve is smoothed, then interpolated onto a common grid of global steps. The grid
    spans only the steps that every seed covers, so no curve is extrapolated.
    """
    lo = max(steps[0] for steps, _ in curves)
    hi = max(lo, min(steps[-1] for steps, _ in curves))
    grid = np.linspace(lo, hi, n_points)
    ys = np.array([np.interp(grid, steps, running_mean(returns)) for steps, returns in curves])
    return grid, ys.mean(axis=0), ys.std(axis=0)


def core_slots(cores, workers: int) -> list[list[int]]:
    """The cores split into `workers` disjoint shares, one per worker; [] (no pinning) when there are
    fewer cores than workers. 4 cores, 2 workers: [[0, 1], [2, 3]]."""
    cores = sorted(cores)
    per_worker = len(cores) // workers
    return [cores[i * per_worker:(i + 1) * per_worker] for i in range(workers)] if per_worker else []


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name="--flag value"' -> ('name', ['--flag', 'value'])."""
    name, sep, flags = text.partition("=")
    # The name becomes part of file and directory names (and of a glob pattern).
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise argparse.ArgumentTypeError(f"expected NAME=\"flags\" with NAME of letters, digits, "
                                         f"'_', '.', '-'; got {text!r}")
    return name, shlex.split(flags)


def summarise(runs: list[Run], env_ids, variants) -> list[dict]:
    """One row per (env, variant): mean and std (ddof=0) over the seeds that have a score."""
    rows = []
    for env_id in env_ids:
        for variant in variants:
            group = [r for r in runs if r.env_id == env_id and r.variant == variant]
            scores = [r.score for r in group if r.ok and not np.isnan(r.score)]
            evals = [r.eval_score for r in group if r.ok and not np.isnan(r.eval_score)]
            walls = [r.wall_s for r in group if r.ok]
            rows.append(dict(
                env=env_id, variant=variant,
                mean=float(np.mean(scores)) if scores else float("nan"),
                std=float(np.std(scores)) if scores else float("nan"),
                eval_mean=float(np.mean(evals)) if evals else float("nan"),
                eval_std=float(np.std(evals)) if evals else float("nan"),
                seeds=[(r.seed, r.score, r.eval_score, r.error, r.log) for r in group],
                wall=float(np.mean(walls)) if walls else float("nan"),
            ))
    return rows


def format_table(rows: list[dict], out: Path) -> str:
    """Markdown table; failed runs name their log, relative to `out` (where results.md lives)."""
    evaluated = any(not np.isnan(row["eval_mean"]) for row in rows)
    lines = ["| env | variant | final score (mean ± std) | per seed | wall s / run |"
             + (" greedy eval (mean ± std) | eval per seed |" if evaluated else ""),
             "|---|---|---|---|---|" + ("---|---|" if evaluated else "")]
    for row in rows:
        per_seed = []
        for seed, score, _, error, log in row["seeds"]:
            if error:
                per_seed.append(f"{seed}: FAILED ({error}, see {os.path.relpath(log, out)})")
            else:
                per_seed.append(f"{seed}: " + ("no episodes" if np.isnan(score) else f"{score:.2f}"))
        final = "failed" if np.isnan(row["mean"]) else f"{row['mean']:.2f} ± {row['std']:.2f}"
        wall = "-" if np.isnan(row["wall"]) else f"{row['wall']:.0f}"
        line = f"| {row['env']} | {row['variant']} | {final} | {', '.join(per_seed)} | {wall} |"
        if evaluated:
            evals = ", ".join(f"{seed}: {value:.2f}" for seed, _, value, *_ in row["seeds"])
            eval_mean = "-" if np.isnan(row["eval_mean"]) else f"{row['eval_mean']:.2f} ± {row['eval_std']:.2f}"
            line += f" {eval_mean} | {evals} |"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------- running and reading runs

def load_returns(run_dir: Path, tag: str = RETURN_TAG) -> tuple[np.ndarray, np.ndarray]:
    """(global steps, episodic returns) of one run, in the order the episodes ended (or another tag's)."""
    # size_guidance 0 keeps every scalar; the default keeps a random sample of 10,000.
    acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return np.zeros(0), np.zeros(0)
    events = acc.Scalars(tag)
    return np.array([e.step for e in events], dtype=float), np.array([e.value for e in events], dtype=float)


def run_one(run: Run, out: Path, extra: list[str], nproc: int = 1, slots: queue.Queue | None = None) -> Run:
    """Train once in a child process; fill in wall time, error (if any) and the logged returns.
    With `slots` (a queue of core_slots), the child runs on one share of the cores, taken for the run."""
    cores = slots.get() if slots is not None else None
    try:
        if cores is not None:  # Linux: pid 0 is this worker thread, and the child it starts inherits its cores
            os.sched_setaffinity(0, cores)
        return train_in_child(run, out, extra, nproc)
    finally:
        if cores is not None:
            slots.put(cores)


def train_in_child(run: Run, out: Path, extra: list[str], nproc: int) -> Run:
    # ppo.py names its directory runs/{env}__{exp_name}__{seed}__{unix time}: the pattern is
    # unique to this run within a benchmark, and diffing it before/after finds the new one
    # even when <out> already holds older runs.
    prefix = f"{run.env_id.replace('/', '-').replace(':', '-')}__{run.variant}__{run.seed}__"
    pattern = str(out / "runs" / glob.escape(prefix)) + "*"
    before = set(glob.glob(pattern))
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node", str(nproc)]  # torchrun
    cmd = [*launcher, str(PPO), "--env-id", run.env_id, "--seed", str(run.seed),
           "--exp-name", run.variant, *run.flags, *extra]
    start = time.perf_counter()
    with open(run.log, "w") as log:
        log.write(shlex.join(cmd) + "\n\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=out, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    run.wall_s = time.perf_counter() - start
    new_dirs = sorted(set(glob.glob(pattern)) - before)
    if proc.returncode != 0:
        run.error = f"exit {proc.returncode}"
    elif len(new_dirs) != 1:
        run.error = f"expected one new run directory matching {pattern}, found {len(new_dirs)}"
    else:
        run.steps, run.returns = load_returns(Path(new_dirs[0]))
        run.eval_returns = load_returns(Path(new_dirs[0]), EVAL_TAG)[1]
    return run


def plot_curves(runs: list[Run], env_ids, variants, path: Path) -> None:
    """One panel per env, one line per variant: mean over seeds with a ±1 std band."""
    fig, axes = plt.subplots(1, len(env_ids), figsize=(4 * len(env_ids), 3.2), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids):
        for variant in variants:
            curves = [(r.steps, r.returns) for r in runs
                      if r.env_id == env_id and r.variant == variant and r.ok and r.returns.size]
            if not curves:
                continue
            grid, mean, std = mean_curve(curves)
            line, = ax.plot(grid, mean, label=f"{variant} ({len(curves)} seeds)")
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_title(env_id, fontsize=10)
        ax.set_xlabel("global step")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"episodic return ({SMOOTH_EPISODES}-episode mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--env-ids", nargs="+", default=["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="most runs at once")
    p.add_argument("--variant", dest="variants", action="append", type=parse_variant, metavar='NAME="FLAGS"',
                   help="flags for ppo.py under a name (repeatable; default: default=\"\")")
    p.add_argument("--extra", default="", help="flags for ppo.py passed to every run "
                   "(a single flag needs the = form: --extra=--no-anneal-lr)")
    p.add_argument("--out", type=Path, help="output directory (default: benchmarks/results/<timestamp>)")
    p.add_argument("--nproc-per-node", type=int, default=1,
                   help="run each training with torchrun and this many processes (data-parallel)")
    args = p.parse_args(argv)

    variants = args.variants or [("default", [])]
    args.variants = dict(variants)
    if len(args.variants) != len(variants):
        p.error("each --variant needs its own name")
    args.extra = shlex.split(args.extra)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    for flags in [args.extra, *args.variants.values()]:
        own = OWN_FLAGS & {f.split("=")[0].replace("_", "-") for f in flags}
        if own:
            p.error(f"{', '.join(sorted(own))} is set by the runner for each run; use --env-ids / --seeds")
    if args.out is None:
        args.out = PPO.parent / "benchmarks" / "results" / time.strftime("%Y%m%d-%H%M%S")
    args.out = args.out.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    env_tag = lambda env_id: re.sub(r"[/:]", "-", env_id)  # '/' and ':' are not file-name safe
    # Seeds outermost, variants innermost: variants of one env run side by side, under the same
    # load, and a cut-short benchmark still has every variant for its first seeds.
    runs = [Run(variant, flags, env_id, seed, args.out / "logs" / f"{variant}__{env_tag(env_id)}__{seed}.log")
            for seed in args.seeds for env_id in args.env_ids for variant, flags in args.variants.items()]

    start = time.perf_counter()
    print(f"{len(runs)} runs, {args.workers} at a time, into {args.out}", file=sys.stderr)
    slots = None
    if hasattr(os, "sched_setaffinity") and core_slots(os.sched_getaffinity(0), args.workers):
        slots = queue.Queue()
        for share in core_slots(os.sched_getaffinity(0), args.workers):
            slots.put(share)
    pool = ThreadPoolExecutor(max_workers=args.workers)
    try:
        futures = [pool.submit(run_one, run, args.out, args.extra, args.nproc_per_node, slots) for run in runs]
        for done, future in enumerate(as_completed(futures), 1):
            run = future.result()
            result = f"{run.score:.1f}" if run.ok else f"FAILED ({run.error}), log {run.log}"
            print(f"[{done}/{len(runs)} done] {run.env_id} seed {run.seed} ({run.variant}): "
                  f"{result} in {run.wall_s:.0f} s", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        # Running children got the same Ctrl-C; don't start the queued ones.
        pool.shutdown(wait=False, cancel_futures=True)
        return 130
    pool.shutdown()
    total = time.perf_counter() - start

    table = format_table(summarise(runs, args.env_ids, args.variants), args.out)
    failed = [r for r in runs if not r.ok]
    extra = shlex.join(args.extra) or "(none)"
    variants = "; ".join(f"{name}: {shlex.join(flags) or '(none)'}" for name, flags in args.variants.items())
    (args.out / "results.md").write_text(
        f"# PPO learning benchmark, {time.strftime('%Y-%m-%d %H:%M')}\n\n"
        f"Final score: mean episodic return of the last {LAST_EPISODES} episodes, mean ± std (ddof=0) "
        f"over seeds {', '.join(map(str, args.seeds))}.\n\n"
        f"Variants: {variants}. Flags for every run: {extra}. Workers: {args.workers}."
        f"{f' Each run: torchrun, {args.nproc_per_node} processes.' if args.nproc_per_node > 1 else ''}\n\n"
        f"{table}\n\nTotal wall time: {total:.0f} s; {len(failed)} of {len(runs)} runs failed.\n\n"
        f"![learning curves](curves.png)\n")
    plot_curves(runs, args.env_ids, list(args.variants), args.out / "curves.png")

    print(table)
    print(f"\ntotal wall time: {total:.0f} s for {len(runs)} runs ({args.workers} workers); "
          f"results in {args.out / 'results.md'}")
    if failed:
        print(f"{len(failed)} run(s) failed: see the logs named in the table", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
