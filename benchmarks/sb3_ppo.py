"""Stable-Baselines3's PPO with the hyperparameters of CleanRL's ppo.py, for side-by-side speed runs.

    pip install stable-baselines3
    python benchmarks/sb3_ppo.py --seed 1 --total-timesteps 500000

CleanRL's defaults, in SB3's terms: 4 envs x n_steps 128, 4 minibatches of 128 (batch_size), 4
epochs, learning rate 2.5e-4 annealed linearly to 0, gamma 0.99, GAE lambda 0.95, clip 0.2 for the
policy and the value (clip_range_vf), entropy 0.01, value 0.5, gradient norm 0.5, Adam eps 1e-5 (SB3's
default for PPO), separate 64-64 tanh actor and critic with orthogonal init (SB3's MlpPolicy
defaults). Each finished episode's return goes to TensorBoard as `charts/episodic_return` in
runs/<name>/, as ppo.py and CleanRL log it, so speed.py reads all three the same way.
SB3's torch runs with torch's default thread count, as CleanRL's does.
"""

import argparse
import time

from torch.utils.tensorboard import SummaryWriter


def episode_logger(writer):
    """An SB3 callback that logs each finished episode's return as `charts/episodic_return` (also for sb3_recurrent.py)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLogger(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:  # SB3's Monitor wrapper, on the step that ends an episode
                    writer.add_scalar("charts/episodic_return", info["episode"]["r"], self.num_timesteps)
            return True

    return EpisodeLogger()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    cli = parser.parse_args()
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        raise SystemExit("error: this benchmark needs Stable-Baselines3: pip install stable-baselines3") from None

    writer = SummaryWriter(f"runs/{cli.env_id}__sb3_ppo__{cli.seed}__{int(time.time())}")

    envs = make_vec_env(cli.env_id, n_envs=4, seed=cli.seed)
    model = PPO("MlpPolicy", envs, n_steps=128, batch_size=128, n_epochs=4,
                learning_rate=lambda progress_remaining: 2.5e-4 * progress_remaining, gamma=0.99,
                gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.01, vf_coef=0.5,
                max_grad_norm=0.5, seed=cli.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=cli.total_timesteps, callback=episode_logger(writer))
    writer.close()


if __name__ == "__main__":
    main()
