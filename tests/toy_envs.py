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

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed)
        return {"t": obs}, info

    def step(self, action):
        obs, *rest = super().step(action)
        return {"t": obs}, *rest


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


class SpacesEnv(gym.Env):
    """Observations and actions of the given spaces, for tests that try many kinds of space.

    The observation is t % 5 (the step in the episode) in every entry, cast to the space's dtype;
    reward 1 for the lowest Discrete action, else 0; for Box actions, -tanh(sum |action|), which is
    never infinite. Episodes are truncated after `length` steps, or never end when length is None.
    """

    def __init__(self, observation_space=None, action_space=None, length=4):
        self.observation_space = observation_space or gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = action_space or gym.spaces.Discrete(2)
        self.length = length

    def _obs(self):
        return np.full(self.observation_space.shape, self.t % 5, dtype=self.observation_space.dtype)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        if not self.action_space.contains(action) if discrete else np.shape(action) != self.action_space.shape:
            raise ValueError(f"action {action!r} is outside {self.action_space}")  # (Box: of another shape)
        self.t += 1
        if discrete:
            reward = float(action == self.action_space.start)
        else:
            reward = -float(np.tanh(np.sum(np.abs(np.nan_to_num(np.asarray(action, np.float64))))))
        truncated = self.length is not None and self.t >= self.length
        return self._obs(), reward, False, truncated, {}


def _register_spaces(env_id, **kwargs):
    gym.register(env_id, entry_point=SpacesEnv, kwargs=kwargs)


_F32 = dict(low=-np.inf, high=np.inf, dtype=np.float32)
_register_spaces("Discrete1-v0", action_space=gym.spaces.Discrete(1))  # one action: nothing to choose
_register_spaces("DiscreteNegative-v0", action_space=gym.spaces.Discrete(3, start=-1))  # actions -1, 0, 1
_register_spaces("UnboundedBox-v0", action_space=gym.spaces.Box(shape=(2,), **_F32))  # no bounds to clip to
_register_spaces("HalfBoundedBox-v0",  # each dimension bounded on one side only
                 action_space=gym.spaces.Box(np.array([-1, -np.inf], np.float32), np.array([np.inf, 1], np.float32)))
_register_spaces("ScalarBox-v0", action_space=gym.spaces.Box(-1, 1, (), np.float32))  # a Box of shape ()
_register_spaces("Float64Spaces-v0", observation_space=gym.spaces.Box(-np.inf, np.inf, (5,), np.float64),
                 action_space=gym.spaces.Box(-1, 1, (3,), np.float64))
_register_spaces("Uint8Obs-v0", observation_space=gym.spaces.Box(0, 255, (6,), np.uint8))
_register_spaces("WideObs-v0", observation_space=gym.spaces.Box(shape=(64,), **_F32),
                 action_space=gym.spaces.Box(-1, 1, (1,), np.float32))
_register_spaces("ColumnObs-v0", observation_space=gym.spaces.Box(shape=(3, 1), **_F32))  # not flat: refused
_register_spaces("ScalarObs-v0", observation_space=gym.spaces.Box(shape=(), **_F32))  # not a vector: refused
_register_spaces("EmptyObs-v0", observation_space=gym.spaces.Box(shape=(0,), **_F32))  # nothing to see
_register_spaces("EmptyBox-v0", action_space=gym.spaces.Box(-1, 1, (0,), np.float32))  # nothing to do
_register_spaces("Endless-v0", length=None)  # episodes never end


# Any gymnasium space (issue #32): observations and actions of every kind the agent takes, and some it refuses.

def _value_of(space, t):
    """An observation of `space` that depends on t alone (no randomness), nested as the space is."""
    if isinstance(space, gym.spaces.Dict):
        return {key: _value_of(part, t) for key, part in space.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_value_of(part, t) for part in space)
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(space.start + t % space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (space.start + t % space.nvec).astype(space.dtype)
    if isinstance(space, gym.spaces.MultiBinary):
        return np.full(space.shape, t % 2, dtype=space.dtype)
    if isinstance(space, gym.spaces.Box):
        return np.clip(np.full(space.shape, t % 5), space.low, space.high).astype(space.dtype)
    return space.sample()  # Text, Graph, Sequence: refused before any step


class AnySpaceEnv(gym.Env):
    """Observations of any space (see _value_of), actions of any space, each checked against the space.

    Reward 1 when every entry of the action is its lowest value (action 0, a MultiBinary of zeros), else 0.
    With `mask` ("info" or "dict"), the lowest choice of each dimension is masked at odd steps, and each
    masked action taken (the reward is as for any other) adds 1 to `masked_actions_taken`, which a test
    reads. Episodes are truncated after `length` steps.
    """

    masked_actions_taken = 0
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, observation_space, action_space=None, length=4, mask=None, mask_shape=None, empty_mask_at=None,
                 render_mode=None):
        self.inner_space = observation_space
        self.action_space = action_space if action_space is not None else gym.spaces.Discrete(3)
        self.mask, self.length, self.empty_mask_at, self.render_mode = mask, length, empty_mask_at, render_mode
        self.mask_size = (int(self.action_space.n) if isinstance(self.action_space, gym.spaces.Discrete)
                          else int(np.sum(getattr(self.action_space, "nvec", 0))))
        self.mask_shape = mask_shape or (self.mask_size,)
        self.observation_space = observation_space
        if mask == "dict":
            self.observation_space = gym.spaces.Dict(
                {"observation": observation_space, "action_mask": gym.spaces.MultiBinary(self.mask_shape)})
        self.steps_taken = 0

    def _action_mask(self):
        mask = np.ones(self.mask_size, np.int8)
        if self.t % 2 == 1:  # the lowest choice of each dimension is masked
            firsts = np.cumsum([0] + list(getattr(self.action_space, "nvec", [self.mask_size]))[:-1])
            mask[firsts] = 0
        if self.empty_mask_at is not None and self.steps_taken == self.empty_mask_at:
            mask[:] = 0
        return np.resize(mask, self.mask_shape)

    def _observe(self):
        obs, info = _value_of(self.inner_space, self.t), {}
        if self.mask == "info":
            info["action_mask"] = self._action_mask()
        elif self.mask == "dict":
            obs = {"observation": obs, "action_mask": self._action_mask()}
        return obs, info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe()

    def step(self, action):
        if not self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        if self.mask is not None:
            mask = self._action_mask().reshape(-1)
            firsts = np.cumsum([0] + list(getattr(self.action_space, "nvec", [self.mask_size]))[:-1])
            masked = not mask[firsts + np.asarray(action).reshape(-1) - np.asarray(getattr(self.action_space, "start", 0))].all()
            AnySpaceEnv.masked_actions_taken += masked
        lowest = getattr(self.action_space, "start", 0)
        reward = float(np.all(np.asarray(action) == lowest))
        self.t += 1
        self.steps_taken += 1
        obs, info = self._observe()
        return obs, reward, False, self.t >= self.length, info

    def render(self):
        return np.full((16, 16, 3), 10 * self.t, np.uint8)


def _register_any(env_id, observation_space=None, **kwargs):
    gym.register(env_id, entry_point=AnySpaceEnv,
                 kwargs=dict(observation_space=observation_space or gym.spaces.Box(-1, 5, (2,), np.float32), **kwargs))


_IMAGE = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
_register_any("DiscreteObs-v0", gym.spaces.Discrete(5, start=2))  # a one-hot of 5
_register_any("MultiDiscreteObs-v0", gym.spaces.MultiDiscrete([3, 4], start=[0, -1]))
_register_any("MultiBinaryObs-v0", gym.spaces.MultiBinary(4))
_register_any("TupleObs-v0", gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.Box(-1, 5, (2,), np.float32))))
_register_any("NestedObs-v0", gym.spaces.Dict({  # a Dict of every kind, nested, an image and a Tuple in it
    "camera": _IMAGE, "position": gym.spaces.Box(-1, 5, (3,), np.float32), "cell": gym.spaces.Discrete(4),
    "inner": gym.spaces.Dict({"bits": gym.spaces.MultiBinary(2), "pair": gym.spaces.Tuple(
        (gym.spaces.MultiDiscrete([2, 3]), gym.spaces.Box(-1, 5, (2, 2), np.float64)))})}))
_register_any("MultiDiscreteAction-v0", action_space=gym.spaces.MultiDiscrete([3, 2, 4], start=[1, 0, -2]))
_register_any("MultiDiscreteGridAction-v0", action_space=gym.spaces.MultiDiscrete([[2, 3], [3, 2]]))
_register_any("MultiBinaryAction-v0", action_space=gym.spaces.MultiBinary(3))
_register_any("MultiBinaryGridAction-v0", action_space=gym.spaces.MultiBinary((2, 2)))
_register_any("MaskedInfo-v0", gym.spaces.Discrete(4), mask="info")  # as gymnasium's toy-text envs
_register_any("MaskedDict-v0", mask="dict", action_space=gym.spaces.MultiDiscrete([3, 2]))  # as PettingZoo's
_register_any("MaskedNested-v0", gym.spaces.Dict({"camera": _IMAGE, "cell": gym.spaces.Discrete(4)}), mask="dict")
_register_any("WrongMask-v0", mask="info", mask_shape=(4,))  # 3 actions, 4 mask entries
_register_any("EmptyMask-v0", mask="info", empty_mask_at=6)  # a mask that allows nothing, at the 6th step
_register_any("TextObs-v0", gym.spaces.Dict({"image": _IMAGE, "mission": gym.spaces.Text(20)}))  # MiniGrid's shape
_register_any("SequenceObs-v0", gym.spaces.Sequence(gym.spaces.Discrete(3)))
_register_any("DictAction-v0", action_space=gym.spaces.Dict({"move": gym.spaces.Discrete(2)}))


class EpisodeClockEnv(gym.Env):
    """obs = [t, final]: t the steps taken in this episode, final 1 on the observation that ends it, which the
    agent sees only at the reset step. Episodes last 2, 3, 4, 5, 6 steps in turn (each copy, seeded apart,
    starts elsewhere in the cycle), and every other one ends by truncation. A recurrent state zeroed exactly
    where each episode's first observation comes has taken t + 1 steps when it reads [t, final]."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episode = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.episode = seed % 5
        self.episode += 1
        self.t, self.length = 0, 2 + self.episode % 5
        return np.array([0.0, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        over = self.t >= self.length
        obs = np.array([self.t, float(over)], np.float32)
        return obs, float(action), over and self.episode % 2 == 0, over and self.episode % 2 == 1, {}


class RememberCueEnv(gym.Env):
    """A task only a memory solves: the first observation shows a cue, [+1, 0] or [-1, 0], the next two show
    [0, 0], then [0, 1] asks for it: action 1 for +1, 0 for -1, reward +1 if right and -1 if wrong, and the
    episode ends (the other steps pay 0). Without a memory the best is 0 on average; with one, 1."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, float(self.np_random.choice([-1.0, 1.0]))
        return np.array([self.cue, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t <= 3:
            return np.array([0.0, float(self.t == 3)], np.float32), 0.0, False, False, {}
        return np.array([0.0, 0.0], np.float32), 1.0 if (action == 1) == (self.cue > 0) else -1.0, True, False, {}


gym.register("EpisodeClock-v0", entry_point=EpisodeClockEnv)
gym.register("RememberCue-v0", entry_point=RememberCueEnv)
