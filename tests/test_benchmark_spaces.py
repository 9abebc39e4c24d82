"""benchmarks/spaces.py: its exact values of a policy agree with the real envs, its optima are the
known ones, and a smoke run of the whole benchmark writes its table."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import space_envs  # noqa: E402
import spaces  # noqa: E402


def table_of(env_id, rule):
    return {key: rule(key) for key, _, _ in space_envs.all_observations(env_id)}


@pytest.mark.parametrize("env_id, rule, episodes, tolerance", [
    ("FrozenLake-v1", lambda s: 2, 4000, 0.01),  # always right: the goal only by slipping
    ("FrozenLake-v1", lambda s: [0, 3, 3, 3, 0, 0, 0, 0, 3, 1, 0, 0, 0, 2, 1, 0][s], 2000, 0.03),
    ("Taxi-v4", lambda s: 0, 50, 1e-9),  # always south: -200 (no delivery, the time limit)
    ("Blackjack-v1", lambda key: 0 if key[0] >= 17 else 1, 20_000, 0.025),  # SE of 20,000 games: 0.0068
    ("space_envs:CodeLock-v0", lambda key: [0, 0, 0], 300, 0.1),
    ("space_envs:Corridor-v0", lambda key: 1, 2000, 0.08),  # always right: half the goals (SE of 2,000: 0.022)
])
def test_the_exact_value_of_a_policy_is_what_the_env_pays(env_id, rule, episodes, tolerance):
    policy = table_of(env_id, rule)
    exact = spaces.exact_value(env_id, policy)
    assert abs(spaces.greedy_episodes(env_id, policy, episodes).mean() - exact) < tolerance, exact


def test_the_optima():
    assert abs(spaces.exact_value("FrozenLake-v1", None) - 0.7442) < 1e-4  # best chance within 100 steps
    assert abs(spaces.exact_value("Taxi-v4", None) - 7.93) < 0.01  # shortest deliveries, 20 - steps
    assert abs(spaces.exact_value("Blackjack-v1", None) - (-0.0431)) < 1e-4  # Sutton and Barto's rules
    assert spaces.exact_value("space_envs:CodeLock-v0", None) == 10
    assert abs(spaces.exact_value("space_envs:Corridor-v0", None) - 0.85) < 1e-9
    # no policy beats the optimum: always stick, never stick, a random table
    rng = np.random.default_rng(0)
    for rule in (lambda key: 0, lambda key: 1, lambda key: int(rng.integers(2))):
        assert spaces.blackjack_value(table_of("Blackjack-v1", rule)) < -0.0431


@pytest.mark.slow
def test_a_smoke_run_writes_the_table(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "spaces.py"), "--seeds", "1", "--envs",
                             "space_envs:Corridor-v0", "Taxi-v4", "--steps", "1024", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "results.md").read_text()
    assert "| space_envs:Corridor-v0 | ppo.py | 1k | 1-1 |" in table and "| 0.850 |" in table
    assert "| Taxi-v4 | ppo.py --no-mask-actions |" in table and "| Taxi-v4 | ppo.py --preset tuned |" in table
