"""Two envs of our own making for benchmarks/spaces.py, each with an optimum known in closed form.

    python ppo.py --env-id space_envs:CodeLock-v0      # (run from benchmarks/, or with it on PYTHONPATH)
    python ppo.py --env-id space_envs:Corridor-v0

CodeLock-v0, MultiDiscrete actions and observations: each step shows a code of 3 digits (each 0-3,
drawn anew), the action is 3 digits, and the reward is the fraction of them that match (1/3 each).
Episodes last 10 steps, so the optimum is 10: copy the code.

Corridor-v0, a Dict observation: a corridor of 7 cells, the agent starts in the middle, and the Dict
says where it is ("position", a Box: the cell / 6) and which end is the goal ("goal", a Discrete(2),
drawn at each reset). Actions: 0 left, 1 right. Each step costs 0.05; reaching the goal ends the
episode with +1, reaching the other end ends it with -1; 20 steps at most. The optimum: 3 steps
straight to the goal, 1 - 3 * 0.05 = 0.85 (the step that reaches it pays its cost too).
"""

import gymnasium as gym
import numpy as np


class CodeLockEnv(gym.Env):
    DIGITS, LENGTH = 3, 10

    def __init__(self):
        self.observation_space = gym.spaces.MultiDiscrete([4] * self.DIGITS)
        self.action_space = gym.spaces.MultiDiscrete([4] * self.DIGITS)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.code = self.np_random.integers(0, 4, self.DIGITS)
        return self.code.copy(), {}

    def step(self, action):
        reward = float(np.mean(np.asarray(action) == self.code))
        self.t += 1
        self.code = self.np_random.integers(0, 4, self.DIGITS)
        return self.code.copy(), reward, False, self.t >= self.LENGTH, {}


class CorridorEnv(gym.Env):
    CELLS, STEP_COST, LIMIT = 7, 0.05, 20

    def __init__(self):
        self.observation_space = gym.spaces.Dict({
            "position": gym.spaces.Box(0.0, 1.0, (1,), np.float32), "goal": gym.spaces.Discrete(2)})
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self):
        return {"position": np.array([self.cell / (self.CELLS - 1)], np.float32), "goal": self.goal}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cell = 0, self.CELLS // 2
        self.goal = int(self.np_random.integers(2))  # 0: the left end, 1: the right end
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.cell += 1 if action == 1 else -1
        at_end = self.cell in (0, self.CELLS - 1)
        reward = -self.STEP_COST + (0.0 if not at_end else 1.0 if self.cell == self.goal * (self.CELLS - 1) else -1.0)
        return self._obs(), reward, at_end, self.t >= self.LIMIT and not at_end, {}


gym.register("CodeLock-v0", entry_point=CodeLockEnv)
gym.register("Corridor-v0", entry_point=CorridorEnv)


# Every observation an agent acts on, for the benchmark's exact evaluation of a greedy policy: a list of
# (key, observation, info) in a fixed order; benchmarks/spaces.py and sb3_spaces.py ask each trained
# policy for its action at each, and spaces.py computes that table's expected return from the env's model.

def all_observations(env_id: str) -> list:
    if env_id == "FrozenLake-v1":
        return [(s, np.int64(s), {}) for s in range(16)]
    if env_id == "Taxi-v4":
        taxi = gym.make("Taxi-v4").unwrapped
        return [(s, np.int64(s), {"action_mask": taxi.action_mask(s)}) for s in range(500)]
    if env_id == "Blackjack-v1":  # (player's sum, dealer's card, usable ace); a usable ace needs a sum of 12-21
        return [((total, card, ace), (total, card, ace), {}) for total in range(4, 22) for card in range(1, 11)
                for ace in (0, 1) if not ace or total >= 12]
    if env_id == "space_envs:CodeLock-v0":
        codes = np.stack(np.meshgrid(*[range(4)] * CodeLockEnv.DIGITS, indexing="ij"), -1).reshape(-1, CodeLockEnv.DIGITS)
        return [(tuple(code), code.astype(np.int64), {}) for code in codes]
    if env_id == "space_envs:Corridor-v0":
        last = CorridorEnv.CELLS - 1
        return [((cell, goal), {"position": np.array([cell / last], np.float32), "goal": np.int64(goal)}, {})
                for cell in range(1, last) for goal in (0, 1)]
    raise ValueError(f"no observation table for {env_id}")


def observation_key(env_id: str, obs):
    """The key all_observations gives the observation an env returns."""
    if env_id == "space_envs:Corridor-v0":
        return int(round(float(obs["position"][0]) * (CorridorEnv.CELLS - 1))), int(obs["goal"])
    if env_id in ("Blackjack-v1", "space_envs:CodeLock-v0"):
        return tuple(int(x) for x in obs)
    return int(obs)
