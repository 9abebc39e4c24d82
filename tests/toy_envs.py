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


class ImageObsEnv(CounterEnv):
    """CounterEnv seen as an 8x8 RGB image (channels last) whose pixels are all 40 * t."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return np.full((8, 8, 3), 40 * int(obs[0]), np.uint8), info

    def step(self, action):
        obs, *rest = super().step(action)
        return np.full((8, 8, 3), 40 * int(obs[0]), np.uint8), *rest


gym.register("Counter-v0", entry_point=CounterEnv)
gym.register("Counter1-v0", entry_point=CounterEnv, kwargs={"length": 1})  # every step ends an episode
gym.register("SameStep-v0", entry_point=CounterEnv,  # a vector env that autoresets in SAME_STEP mode
             vector_entry_point=lambda num_envs, **kwargs: gym.vector.SyncVectorEnv(
                 [CounterEnv] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
gym.register("MultiBinary-v0", entry_point=MultiBinaryEnv)
gym.register("DictObs-v0", entry_point=DictObsEnv)
gym.register("ImageObs-v0", entry_point=ImageObsEnv)


class VolumeObsEnv(CounterEnv):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2, 8, 8, 3), np.float32)


gym.register("VolumeObs-v0", entry_point=VolumeObsEnv)


class BoxActionEnv(gym.Env):
    """Continuous actions in the narrow box [-0.5, 0.5]^2; observations around 100.

    Every action the env receives is appended to `received_actions`, so a test can compare
    them with the actions the trainer stored. Episodes last 8 steps (truncated by the clock).
    """

    received_actions = []

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(-0.5, 0.5, (2,), np.float32)

    def _obs(self):
        return (100.0 + 5.0 * self.np_random.standard_normal(3)).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        BoxActionEnv.received_actions.append(np.array(action, dtype=np.float32))
        self.t += 1
        return self._obs(), -float(np.sum(np.square(action))), False, self.t >= 8, {}


gym.register("BoxAction-v0", entry_point=BoxActionEnv)


class ShiftedDiscreteEnv(CounterEnv):
    """Actions are Discrete(3, start=1): 1, 2 or 3. Reward 1 for action 3, else 0. Every action the env
    receives goes to `received_actions`; one outside the space raises."""

    received_actions = []

    def __init__(self):
        super().__init__(length=8)
        self.action_space = gym.spaces.Discrete(3, start=1)

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        ShiftedDiscreteEnv.received_actions.append(int(action))
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(action == 3), terminated, truncated, info


class MatrixActionEnv(BoxActionEnv):
    """BoxActionEnv with actions in a Box of shape (2, 3)."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-0.5, 0.5, (2, 3), np.float32)

    def step(self, action):
        if np.shape(action) != (2, 3):
            raise ValueError(f"action of shape {np.shape(action)}, expected (2, 3)")
        return super().step(action)


gym.register("ShiftedDiscrete-v0", entry_point=ShiftedDiscreteEnv)
gym.register("MatrixAction-v0", entry_point=MatrixActionEnv)
