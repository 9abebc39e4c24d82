"""Stable-Baselines3's PPO on one env of benchmarks/spaces.py: train, then print its greedy action at
every observation of space_envs.all_observations, as one line of JSON. Run by spaces.py (--sb3-python).

    python benchmarks/sb3_spaces.py --env-id Taxi-v4 --seed 1 --total-timesteps 500000

CleanRL's ppo.py hyperparameters in SB3's terms, as benchmarks/sb3_ppo.py: 4 envs x 128 steps, 4
minibatches of 128, 4 epochs, learning rate 2.5e-4 annealed to 0, gamma 0.99, lambda 0.95, clip 0.2
for the policy and the value, entropy 0.01, value 0.5, gradient norm 0.5; SB3's MlpPolicy (64-64
tanh, orthogonal init), or MultiInputPolicy for a Dict. SB3 one-hot encodes Discrete and MultiDiscrete
observations as ppo.py does. It has no Tuple observations: Blackjack's Tuple of three Discretes goes
to it as the MultiDiscrete of the same three (the same one-hots). It cannot use Taxi's action mask.
One torch thread, as ppo.py, so that two runs share the 2 cores evenly (a learning benchmark, not a
speed one).
"""

import argparse
import json
import os
import sys

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import space_envs  # noqa: E402  (registers CodeLock-v0 and Corridor-v0)


class TupleAsMultiDiscrete(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.MultiDiscrete([part.n for part in env.observation_space])

    def observation(self, obs):
        return np.array(obs, dtype=np.int64)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    cli = parser.parse_args()
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    tuple_obs = isinstance(gym.make(cli.env_id.split(":")[-1]).observation_space, gym.spaces.Tuple)
    env_id = cli.env_id.split(":")[-1]  # space_envs registered its envs under their own names
    envs = make_vec_env(env_id, n_envs=4, seed=cli.seed, wrapper_class=TupleAsMultiDiscrete if tuple_obs else None)
    policy = "MultiInputPolicy" if isinstance(envs.observation_space, gym.spaces.Dict) else "MlpPolicy"
    model = PPO(policy, envs, n_steps=128, batch_size=128, n_epochs=4,
                learning_rate=lambda progress_remaining: 2.5e-4 * progress_remaining, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5,
                max_grad_norm=0.5, seed=cli.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=cli.total_timesteps)
    actions = []
    for _, obs, _ in space_envs.all_observations(cli.env_id):
        obs = np.array(obs, dtype=np.int64) if tuple_obs else obs
        action, _ = model.predict(obs, deterministic=True)
        actions.append(np.asarray(action).tolist())
    print(json.dumps({"actions": actions}))


if __name__ == "__main__":
    main()
