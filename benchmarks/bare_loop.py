"""The floor of ppo.py's design: its own pieces in its own loop, and nothing else.

    python benchmarks/bare_loop.py --total-timesteps 500000 --seed 1
    python benchmarks/bare_loop.py --env-id Hopper-v4 --total-timesteps 200000   # a Box env

make_envs, Agent, ClippedAdam, compute_gae and ppo_loss, imported from ppo.py, run in train()'s
loop at CleanRL's defaults (CartPole-v1, 4 envs x 128 steps, 4 epochs x 4 minibatches; for a Box
env, ppo_continuous_action.py's: 1 env x 2048 steps, 10 epochs x 32 minibatches), with no
logging, no episode bookkeeping, no statistics, no finiteness check, no checkpoint, no signal
handling and no run directory. It computes what `python ppo.py --seed S` computes: the same random
streams in the same order, so the same weights at the end (tests/test_runner.py checks it). Its
whole-process time, beside ppo.py's and CleanRL's (`speed.py --only peers --bare`), is what ppo.py
would take if everything around the algorithm cost nothing.

--env-only steps make_envs' stack alone, as many steps, with random actions and no agent: what any
trainer stepping these wrappers pays for the env, whatever its policy and its update cost.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ppo  # noqa: E402


def bare_train(args: ppo.Args) -> ppo.Agent:
    """train()'s algorithm alone: one process, CPU, GAE."""
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    envs = ppo.make_envs(args, args.num_envs)
    torch.set_num_threads(ppo.torch_threads(args, envs.single_observation_space))  # as train(): 1 for MLPs
    agent = ppo.Agent(envs, args.hidden_size, args.activation, args.ortho_init, args.log_std_init)
    optimizer = ppo.ClippedAdam(agent.parameters(), lr=args.learning_rate, eps=1e-5, max_grad_norm=args.max_grad_norm)
    steps, n = args.num_steps, args.num_envs
    obs = np.zeros((steps, n) + envs.single_observation_space.shape, dtype=np.float32)
    actions = np.zeros((steps, n) + envs.single_action_space.shape, dtype=envs.single_action_space.dtype)
    rewards = np.zeros((steps, n), dtype=np.float32)
    terminations, truncations, resets = (np.zeros((steps, n), dtype=bool) for _ in range(3))
    next_obs, _ = envs.reset(seed=args.seed)
    next_done = np.zeros(n, dtype=bool)
    num_iterations = args.total_timesteps // (steps * n)
    for iteration in range(1, num_iterations + 1):
        optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        with torch.inference_mode():
            for step in range(steps):
                obs[step], resets[step] = next_obs, next_done
                actions[step] = action = agent.get_action(torch.as_tensor(next_obs, dtype=torch.float32)).numpy()
                next_obs, rewards[step], terminations[step], truncations[step], _ = envs.step(action)
                next_done = terminations[step] | truncations[step]
        b_obs = torch.as_tensor(obs.reshape((-1,) + envs.single_observation_space.shape))
        b_actions = torch.as_tensor(actions.reshape((-1,) + envs.single_action_space.shape))
        with torch.no_grad():
            _, b_logprobs, _, b_values = agent.get_action_and_value(b_obs, b_actions)
            next_value = agent.get_value(torch.as_tensor(next_obs, dtype=torch.float32)).numpy()
        values = b_values.numpy().reshape(steps, n)
        advantages = ppo.compute_gae(rewards, values, next_value, terminations, truncations, args.gamma, args.gae_lambda)
        b_advantages = torch.as_tensor(advantages.reshape(-1))
        b_returns = torch.as_tensor((advantages + values).reshape(-1))
        b_inds = np.flatnonzero(~resets.reshape(-1))
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for mb_inds in np.array_split(b_inds, args.num_minibatches):
                mb_inds = torch.as_tensor(mb_inds)
                loss, _ = ppo.ppo_loss(agent, b_obs[mb_inds], b_actions[mb_inds], b_logprobs[mb_inds],
                                       b_values[mb_inds], b_advantages[mb_inds], b_returns[mb_inds], args)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return agent


def main():
    start = time.time()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--env-only", action="store_true", help="step the env stack alone, random actions")
    cli = parser.parse_args()
    # ppo.py's flags for the env (a Box env's defaults are ppo_continuous_action.py's), as ppo.py reads them
    args = ppo.parse_args(["--env-id", cli.env_id, "--total-timesteps", str(cli.total_timesteps), "--seed", str(cli.seed)])
    batch = args.num_envs * args.num_steps
    if cli.env_only:
        envs = ppo.make_envs(args, args.num_envs)
        envs.reset(seed=args.seed)
        envs.action_space.seed(args.seed)
        for _ in range(cli.total_timesteps // batch * args.num_steps):
            envs.step(envs.action_space.sample())
    else:
        bare_train(args)
    print(f"{cli.total_timesteps // batch * batch:,} steps in {time.time() - start:.1f} s (whole process)")


if __name__ == "__main__":
    main()
