"""CartPoleNoVel-v1: CartPole-v1 with its velocities hidden, an env that needs a memory (benchmarks/memory.py).

    python ppo.py --env-id memory_envs:CartPoleNoVel-v1 --recurrent lstm   # (from benchmarks/, or with it on PYTHONPATH)

The cart's velocity and the pole's angular velocity (observation indices 1 and 3) are set to 0, as
rl-baselines3-zoo's MaskVelocityWrapper does for its CartPoleNoVel-v1 (rl_zoo3/wrappers.py); the
observation stays 4 numbers, and CartPole-v1's 500-step limit holds. One observation shows where the
cart and the pole are, not where they are going: a policy must read that from the ones before.
"""

import gymnasium as gym
import numpy as np

VELOCITIES = [1, 3]  # CartPole's observation: position, velocity, angle, angular velocity


class HideVelocities(gym.ObservationWrapper):
    def observation(self, observation):
        observation = observation.copy()
        observation[VELOCITIES] = 0.0
        return observation


def make_cartpole_novel(**kwargs) -> gym.Env:
    return HideVelocities(gym.make("CartPole-v1", **kwargs))


gym.register("CartPoleNoVel-v1", entry_point=make_cartpole_novel)
