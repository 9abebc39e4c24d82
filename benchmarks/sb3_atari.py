"""Stable-Baselines3's PPO with rl-baselines3-zoo's Atari settings, beside ppo.py on the same game.

    pip install stable-baselines3 -r requirements-atari.txt
    python benchmarks/sb3_atari.py --env-id BreakoutNoFrameskip-v4 --seed 1 --total-timesteps 1000000

rl-zoo's hyperparams/ppo.yml for Atari (the same as CleanRL's ppo_atari.py): SB3's AtariWrapper
(no-op reset, frame skip 4 with max-pooling, end of life as the end of an episode, FIRE reset, reward
clipping, 84x84 grayscale), 4 stacked frames, CnnPolicy (the Nature CNN), 8 envs x n_steps 128,
minibatches of 256, 4 epochs, learning rate 2.5e-4 and clip range 0.1, both annealed linearly to 0,
value coefficient 0.5, entropy 0.01. Each whole game's raw score (SB3's Monitor sits inside the
AtariWrapper) goes to TensorBoard as `charts/episodic_return` in runs/<name>/, as ppo.py logs it.
Torch's own thread count (all the cores), what an SB3 user gets; --torch-threads 1 lets two learning
runs share a 2-core machine.
"""

import argparse
import time

import torch
from torch.utils.tensorboard import SummaryWriter


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=1_000_000)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default (SB3 sets none)")
    cli = parser.parse_args()
    try:
        import ale_py
        import gymnasium as gym
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError:
        raise SystemExit("error: this benchmark needs Stable-Baselines3 and ale-py: "
                         "pip install stable-baselines3 -r requirements-atari.txt") from None
    gym.register_envs(ale_py)
    if cli.torch_threads:
        torch.set_num_threads(cli.torch_threads)
    writer = SummaryWriter(f"runs/{cli.env_id}__sb3_ppo__{cli.seed}__{int(time.time())}")
    start = time.time()

    class EpisodeLogger(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:  # SB3's Monitor: a whole game, its raw score
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], self.num_timesteps)
            if self.n_calls % 1000 == 0:
                writer.add_scalar("charts/SPS", int(self.num_timesteps / (time.time() - start)), self.num_timesteps)
            return True

    envs = VecFrameStack(make_atari_env(cli.env_id, n_envs=8, seed=cli.seed), n_stack=4)
    model = PPO("CnnPolicy", envs, n_steps=128, batch_size=256, n_epochs=4,
                learning_rate=lambda progress_remaining: 2.5e-4 * progress_remaining,
                clip_range=lambda progress_remaining: 0.1 * progress_remaining, vf_coef=0.5, ent_coef=0.01,
                seed=cli.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=cli.total_timesteps, callback=EpisodeLogger())
    writer.close()


if __name__ == "__main__":
    main()
