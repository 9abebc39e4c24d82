"""Compare the speed of two versions of ppo.py, run alternately (A B A B ...), whole process.

    git show 6a97c2f:ppo.py > /tmp/ppo_old.py
    python benchmarks/compare.py /tmp/ppo_old.py ppo.py --runs 3 -- --total-timesteps 100000

Alternating runs see the same machine noise, so the median of the per-pair ratios is a far
steadier figure than two separate medians on a noisy machine. Wall and CPU time (user + system)
both: a version that finishes sooner by keeping a second core busy shows it in the CPU ratio.
Never run beside another job.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from speed import CPU, run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ppo_a", type=Path)
    parser.add_argument("ppo_b", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    cli, flags = parser.parse_known_args()  # everything after -- goes to both versions
    flags = [f for f in flags if f != "--"]
    workdir = tempfile.mkdtemp(prefix="ppo-compare-")
    results = {"a": [], "b": []}
    for i in range(cli.runs):
        for key, path in (("a", cli.ppo_a), ("b", cli.ppo_b)):
            result = run([sys.executable, str(path.resolve()), *flags, *CPU], workdir)
            results[key].append(result)
            print(f"run {i + 1} {key} ({path}): wall {result['wall']:.1f} s, CPU {result['cpu']:.1f} s", flush=True)
    for key in ("wall", "cpu"):
        a, b = ([r[key] for r in results[k]] for k in ("a", "b"))
        ratios = [x / y for x, y in zip(a, b)]
        print(f"median {key}: a {statistics.median(a):.1f} s, b {statistics.median(b):.1f} s; "
              f"median ratio a/b {statistics.median(ratios):.2f} (>1: b is faster)")


if __name__ == "__main__":
    main()
