"""sb3-contrib's RecurrentPPO at rl-baselines3-zoo's settings for CartPoleNoVel-v1, for benchmarks/memory.py.

    pip install sb3-contrib
    python benchmarks/sb3_recurrent.py --seed 1 --eval-episodes 100

The settings are rl-zoo's hyperparams/ppo_lstm.yml entry for CartPoleNoVel-v1 (marked "Tuned" there):
8 envs x n_steps 32, batch_size 256 (one minibatch), 20 epochs, learning rate 1e-3 and clip range 0.2
both annealed linearly to 0, gamma 0.98, GAE lambda 0.8, no entropy bonus, observations and rewards
normalised (VecNormalize), and policy_kwargs: an LSTM of 64 for the actor and another for the critic
(enable_critic_lstm), then one hidden layer of 64 each (net_arch pi [64], vf [64]), ReLU, torch's init
(ortho_init False); 100k steps. Each finished episode's return goes to TensorBoard as
`charts/episodic_return` in runs/<name>/, and the greedy (deterministic) policy's returns after
training as `eval/episodic_return`, as ppo.py logs them. torch keeps its default thread count.
"""

import argparse
import os
import sys
import time

import numpy as np
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memory_envs  # noqa: E402, F401  (registers CartPoleNoVel-v1)
from sb3_ppo import episode_logger  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="CartPoleNoVel-v1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=100_000)
    parser.add_argument("--eval-episodes", type=int, default=100)
    cli = parser.parse_args()
    try:
        import torch.nn as nn
        from sb3_contrib import RecurrentPPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize
    except ImportError:
        raise SystemExit("error: this benchmark needs sb3-contrib: pip install sb3-contrib") from None

    writer = SummaryWriter(f"runs/{cli.env_id}__sb3_recurrent_ppo__{cli.seed}__{int(time.time())}")

    envs = VecNormalize(make_vec_env(cli.env_id, n_envs=8, seed=cli.seed), gamma=0.98)
    model = RecurrentPPO(
        "MlpLstmPolicy", envs, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, ent_coef=0.0,
        learning_rate=lambda progress_remaining: 1e-3 * progress_remaining,
        clip_range=lambda progress_remaining: 0.2 * progress_remaining,
        policy_kwargs=dict(ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, enable_critic_lstm=True,
                           net_arch=dict(pi=[64], vf=[64])),
        seed=cli.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=cli.total_timesteps, callback=episode_logger(writer))

    # The greedy policy, its LSTM state carried through each episode, on observations normalised as in training
    envs.training, envs.norm_reward = False, False
    eval_envs = VecNormalize(make_vec_env(cli.env_id, n_envs=1, seed=cli.seed + 100_000), training=False,
                             norm_reward=False)
    eval_envs.obs_rms = envs.obs_rms
    obs, state, starts, returns = eval_envs.reset(), None, np.ones(1, dtype=bool), []
    while len(returns) < cli.eval_episodes:
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        obs, _, starts, infos = eval_envs.step(action)
        if "episode" in infos[0]:
            returns.append(infos[0]["episode"]["r"])
    for episode, episode_return in enumerate(returns):
        writer.add_scalar("eval/episodic_return", episode_return, episode)
    print(f"eval: mean return {np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes (greedy policy)")
    writer.close()


if __name__ == "__main__":
    main()
