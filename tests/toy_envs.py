"""Tiny envs for the tests, registered on import so `toy_envs:Counter-v0` works as an env id."""

import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    """obs = [t]: the number of steps taken in the episode; reward 1 per step.

    Terminates after `length` steps. The final observation is [length], which no real
    transition starts from: seeing it as a training input means a reset step was trained on.
    """

    def __init__(self, length=5):
        self.length = length
        self.observation_space = gym.spaces.Box(0, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, self.t >= self.length, False, {}


class MultiBinaryEnv(CounterEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.MultiBinary(3)


class DictObsEnv(CounterEnv):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"t": gym.spaces.Box(0, np.inf, (1,), np.float32)})


gym.register("Counter-v0", entry_point=CounterEnv)
gym.register("MultiBinary-v0", entry_point=MultiBinaryEnv)
gym.register("DictObs-v0", entry_point=DictObsEnv)
