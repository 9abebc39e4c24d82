"""Learning on the spaces beyond Discrete and Box (issue #32): ppo.py beside Stable-Baselines3's PPO,
each greedy policy scored against the env's optimum, which this script computes.

    pip install -r requirements-dev.txt                    # ppo.py's venv
    python -m venv ../sb3-venv && ../sb3-venv/bin/pip install torch==2.13.0 stable-baselines3==2.9.2 gymnasium==1.4.0
    python benchmarks/spaces.py --seeds 1 2 3 4 5 --sb3-python ../sb3-venv/bin/python --out /tmp/spaces

The envs: FrozenLake-v1 (slippery, as by default; Discrete observations), Taxi-v4 (Discrete
observations, an action mask in its info: ppo.py uses it by default, and runs again without it,
--no-mask-actions), Blackjack-v1 (a Tuple of three Discretes), and two of benchmarks/space_envs.py:
CodeLock-v0 (MultiDiscrete actions and observations) and Corridor-v0 (a Dict of a Box and a Discrete).

Each run trains with the trainer's defaults (ppo.py's are CleanRL's; SB3 is given the same values,
benchmarks/sb3_spaces.py), and ppo.py again with --preset tuned where the env has one (Taxi: with and
without its mask), then its greedy policy is read at every observation the env has, and scored
twice: exactly, its expected return computed from the env's model (FrozenLake's and Taxi's transition
tables, within their time limits of 100 and 200 steps; Blackjack's rules with an infinite deck; the two
toys' rules), and by 100 greedy episodes of the real env (seeds 100000-100099). The optimum is computed
the same way: value iteration over the time limit (FrozenLake: the best probability of reaching the goal
within 100 steps; Taxi: the best expected return from its start distribution), Blackjack's optimal
hit-or-stick by dynamic programming, and the toys' closed forms (10 and 0.85). Results go to
<out>/results.md and <out>/results.json; a run's console goes to <out>/logs/.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
import ppo  # noqa: E402
import space_envs  # noqa: E402

ENVS = {  # env id: training steps
    "FrozenLake-v1": 300_000,
    "Taxi-v4": 300_000,
    "Blackjack-v1": 300_000,
    "space_envs:CodeLock-v0": 100_000,
    "space_envs:Corridor-v0": 50_000,
}
# ppo.py's defaults; without Taxi's mask (on Taxi alone); and --preset tuned where the env has one (its own steps)
VARIANTS = {"ppo.py": [], "ppo.py --no-mask-actions": ["--no-mask-actions"], "ppo.py --preset tuned": ["--preset", "tuned"],
            "ppo.py --preset tuned --no-mask-actions": ["--preset", "tuned", "--no-mask-actions"]}
EVAL_EPISODES = 100


# ---- the envs' models: the expected return of a greedy policy (a table: observation key -> action) ----

def tabular_value(env_id: str, policy: dict | None, horizon: int) -> float:
    """FrozenLake, Taxi: the expected return within `horizon` steps from the start distribution, by
    backward induction over the env's transition table P; policy None: the best over all policies."""
    env = gym.make(env_id).unwrapped
    n_states, n_actions = env.observation_space.n, env.action_space.n
    start = env.initial_state_distrib
    values = np.zeros(n_states)
    for _ in range(horizon):
        q = np.zeros((n_states, n_actions))
        for s in range(n_states):
            for a in range(n_actions):
                q[s, a] = sum(p * (r + (0.0 if done else values[s2])) for p, s2, r, done in env.P[s][a])
        values = q.max(1) if policy is None else q[np.arange(n_states), [policy[s] for s in range(n_states)]]
    return float(start @ values)


CARD_PROBS = {card: (4 if card == 10 else 1) / 13 for card in range(1, 11)}  # gymnasium's infinite deck


def hand_score(raw: int, ace: bool) -> int:
    return raw + 10 if ace and raw + 10 <= 21 else raw


@functools.lru_cache(None)
def dealer_outcomes(raw: int, ace: bool) -> tuple:
    """{final score: probability} of the dealer drawing until 17 (a soft 17 stands); 0: bust."""
    score = hand_score(raw, ace)
    if score > 21:
        return ((0, 1.0),)
    if score >= 17:
        return ((score, 1.0),)
    outcomes = {}
    for card, p in CARD_PROBS.items():
        for final, q in dealer_outcomes(raw + card, ace or card == 1):
            outcomes[final] = outcomes.get(final, 0.0) + p * q
    return tuple(outcomes.items())


def blackjack_value(policy: dict | None) -> float:
    """Blackjack-v1's expected return (registered with sab=True: Sutton and Barto's rules, where a natural,
    an ace and a ten as the first two cards, wins unless the dealer has one too) of a hit (1) or stick (0)
    table over (player's sum, dealer's card, usable ace); None: the optimal policy's."""
    @functools.lru_cache(None)
    def stick_and_hit(total: int, card: int, usable: bool) -> tuple:
        stick = sum(q * (1 if final == 0 or total > final else -1 if total < final else 0)
                    for final, q in dealer_outcomes(card, card == 1))
        raw = total - 10 if usable else total  # an ace that no longer counts 11 never will: no ace, for the future
        hit = 0.0
        for drawn, p in CARD_PROBS.items():
            new_ace, new_raw = usable or drawn == 1, raw + drawn
            new_total = hand_score(new_raw, new_ace)
            hit += p * (-1.0 if new_total > 21 else value(new_total, card, new_ace and new_raw + 10 <= 21))
        return stick, hit

    def value(total: int, card: int, usable: bool) -> float:
        stick, hit = stick_and_hit(total, card, usable)
        if policy is None:
            return max(stick, hit)
        return hit if policy[(total, card, int(usable))] == 1 else stick

    expected = 0.0
    for first, p1 in CARD_PROBS.items():
        for second, p2 in CARD_PROBS.items():
            ace = 1 in (first, second)
            total = hand_score(first + second, ace)
            for card, p3 in CARD_PROBS.items():
                if {first, second} == {1, 10}:  # a natural: sticking wins, unless the dealer's hidden card makes one
                    dealer_natural = CARD_PROBS[10] if card == 1 else CARD_PROBS[1] if card == 10 else 0.0
                    stick, hit = 1.0 - dealer_natural, stick_and_hit(21, card, True)[1]
                    chosen = max(stick, hit) if policy is None else hit if policy[(21, card, 1)] == 1 else stick
                    expected += p1 * p2 * p3 * chosen
                else:
                    expected += p1 * p2 * p3 * value(total, card, ace and first + second + 10 <= 21)
    return expected


def exact_value(env_id: str, policy: dict | None) -> float:
    if env_id == "FrozenLake-v1":
        return tabular_value(env_id, policy, horizon=100)
    if env_id == "Taxi-v4":
        return tabular_value(env_id, policy, horizon=200)
    if env_id == "Blackjack-v1":
        return blackjack_value(policy)
    if env_id == "space_envs:CodeLock-v0":  # each step: the fraction of digits copied, for a uniform code
        if policy is None:
            return float(space_envs.CodeLockEnv.LENGTH)
        return space_envs.CodeLockEnv.LENGTH * float(np.mean([np.mean(np.array(policy[key]) == np.array(key))
                                                             for key in policy]))
    if env_id == "space_envs:Corridor-v0":  # deterministic once the goal is drawn: walk each of the two
        corridor = space_envs.CorridorEnv
        if policy is None:
            return 1.0 - (corridor.CELLS // 2) * corridor.STEP_COST
        returns = []
        for goal in (0, 1):
            cell, total = corridor.CELLS // 2, 0.0
            for _ in range(corridor.LIMIT):
                cell += 1 if policy[(cell, goal)] == 1 else -1
                total -= corridor.STEP_COST
                if cell in (0, corridor.CELLS - 1):
                    total += 1.0 if cell == goal * (corridor.CELLS - 1) else -1.0
                    break
            returns.append(total)
        return float(np.mean(returns))
    raise ValueError(env_id)


def greedy_episodes(env_id: str, policy: dict, episodes: int = EVAL_EPISODES) -> np.ndarray:
    """Returns of `episodes` episodes of the real env, the policy table acting."""
    env = gym.make(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=100_000 + i)
        total, done = 0.0, False
        while not done:
            action = policy[space_envs.observation_key(env_id, obs)]
            obs, reward, terminated, truncated, _ = env.step(np.array(action) if isinstance(action, list) else action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    return np.array(returns)


# ---- the trainers ----

def ppo_policy(env_id: str, run_dir: Path, flags: list[str]) -> dict:
    """ppo.py's saved model, asked for its greedy action at every observation of the env."""
    args = ppo.parse_args(["--env-id", env_id, *flags])
    envs = ppo.make_envs(args, 1)
    agent = ppo.Agent(envs, args.hidden_size, args.activation, args.ortho_init, args.log_std_init)
    masked = "action_mask" in getattr(envs.single_observation_space, "spaces", {})
    envs.close()
    model = next(run_dir.glob("runs/*/*.cleanrl_model"))
    agent.load_state_dict(torch.load(model, weights_only=True))
    policy = {}
    for key, obs, info in space_envs.all_observations(env_id):
        if isinstance(obs, (dict, tuple)) or masked:
            parts = ppo.flat_parts(obs) if isinstance(obs, (dict, tuple)) else {"observation": obs}
            if masked:
                parts["action_mask"] = info["action_mask"]
            batch = ppo.ObservationParts({name: np.asarray(part)[None] for name, part in parts.items()})
        else:
            batch = np.asarray(obs)[None]
        with torch.inference_mode():
            action = agent.get_greedy_action(ppo.as_tensor(batch, torch.device("cpu")))[0]
        policy[key] = action.tolist()
    return policy


def train(job: dict, out: Path, sb3_python: str | None) -> dict:
    env_id, seed, variant = job["env_id"], job["seed"], job["variant"]
    name = f"{variant.replace(' ', '')}__{env_id.replace(':', '-')}__{seed}"
    work, log = out / "work" / name, out / "logs" / f"{name}.log"
    work.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS="1")
    start = time.time()
    if variant == "SB3 PPO":
        command = [sb3_python, str(HERE / "sb3_spaces.py"), "--env-id", env_id, "--seed", str(seed),
                   "--total-timesteps", str(ENVS[env_id])]
    else:
        steps = [] if "--preset" in VARIANTS[variant] else ["--total-timesteps", str(ENVS[env_id])]  # a preset's own
        command = [sys.executable, str(HERE.parent / "ppo.py"), "--env-id", env_id, "--seed", str(seed), *steps,
                   "--save-model", "--checkpoint-every", "0", "--exp-name", "spaces", *VARIANTS[variant]]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        return dict(job, error=f"exit {result.returncode}: {(result.stderr.strip().splitlines() or [''])[-1]}")
    if variant == "SB3 PPO":
        actions = json.loads(result.stdout.strip().splitlines()[-1])["actions"]
        keys = [key for key, _, _ in space_envs.all_observations(env_id)]
        policy = dict(zip(keys, actions))
    else:
        policy = ppo_policy(env_id, work, VARIANTS[variant])
    returns = greedy_episodes(env_id, policy)
    return dict(job, wall_s=time.time() - start, exact=exact_value(env_id, policy), actions=list(policy.values()),
                eval_mean=float(returns.mean()), eval_std=float(returns.std()))


def runs_on(variant: str, env_id: str) -> bool:
    if variant.endswith("--no-mask-actions"):
        return env_id == "Taxi-v4"
    return variant != "ppo.py --preset tuned" or env_id in ppo.PRESETS


def steps_of(variant: str, env_id: str) -> int:
    flags = VARIANTS.get(variant, [])
    if "--total-timesteps" in flags:
        return int(flags[flags.index("--total-timesteps") + 1])
    return ppo.PRESETS[env_id]["total_timesteps"] if "--preset" in flags else ENVS[env_id]


def table(results: list[dict]) -> str:
    lines = ["| env | trainer | steps | seeds | exact expected return of the greedy policy, mean ± std (per seed) | "
             f"{EVAL_EPISODES} greedy episodes, mean over seeds | optimum |", "|---|---|---|---|---|---|---|"]
    for env_id in ENVS:
        optimum = exact_value(env_id, None)
        for variant in [*VARIANTS, "SB3 PPO"]:
            for tuned_on in (True, False):  # seeds 1-3, then the others
                rows = [r for r in results if r["env_id"] == env_id and r["variant"] == variant and (r["seed"] <= 3) == tuned_on]
                if not rows:
                    continue
                failed = [r for r in rows if "error" in r]
                exact = np.array([r["exact"] for r in rows if "error" not in r])
                per_seed = ", ".join(f"{r['exact']:.3f}" if "error" not in r else "failed" for r in rows)
                evals = np.mean([r["eval_mean"] for r in rows if "error" not in r]) if len(exact) else float("nan")
                lines.append(f"| {env_id} | {variant} | {steps_of(variant, env_id) // 1000}k | "
                             f"{min(r['seed'] for r in rows)}-{max(r['seed'] for r in rows)} | "
                             f"{exact.mean():.3f} ± {exact.std():.3f} ({per_seed}) | {evals:.3f} | {optimum:.3f} |"
                             + (f" {len(failed)} failed" if failed else ""))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--sb3-python", help="a python with stable-baselines3 (none: ppo.py alone)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("spaces-benchmark"))
    parser.add_argument("--steps", type=int, help="train every env (and preset) for this many steps: a smoke test")
    parser.add_argument("--table-only", action="store_true", help="train nothing: the table of <out>/results.json")
    cli = parser.parse_args()
    if cli.steps:
        for env_id in ENVS:
            ENVS[env_id] = cli.steps
        for variant in ["ppo.py --preset tuned", "ppo.py --preset tuned --no-mask-actions"]:
            VARIANTS[variant] = [*VARIANTS[variant], "--total-timesteps", str(cli.steps)]
    (cli.out / "logs").mkdir(parents=True, exist_ok=True)
    variants = [*VARIANTS] + (["SB3 PPO"] if cli.sb3_python else [])
    # seeds 1-3 first, then the rest: a benchmark stopped early has the tuned-on seeds of every env
    jobs = [dict(env_id=env_id, seed=seed, variant=variant)
            for seed_group in ([s for s in cli.seeds if s <= 3], [s for s in cli.seeds if s > 3])
            for variant in variants for env_id in cli.envs for seed in seed_group
            if runs_on(variant, env_id)]
    results_path = cli.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["env_id"], r["seed"], r["variant"]) for r in results if "error" not in r}
    jobs = [job for job in jobs if (job["env_id"], job["seed"], job["variant"]) not in done and not cli.table_only]
    with ThreadPoolExecutor(cli.workers) as pool:
        for result in pool.map(lambda job: train(job, cli.out, cli.sb3_python), jobs):
            results.append(result)
            results_path.write_text(json.dumps(results, indent=1))  # after each run: a stopped benchmark resumes
            print(json.dumps({key: value for key, value in result.items() if key != "actions"}), flush=True)
    (cli.out / "results.md").write_text(table(results) + "\n")
    print(table(results))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
