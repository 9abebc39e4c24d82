"""Where a training step's time goes: each piece of ppo.py's loop timed alone.

    python benchmarks/profile_step.py [--num-envs 4]

Prints microseconds per call (median of repeats) for the env step, the policy forward with
sampling, the host/tensor conversions and buffer writes of one rollout step, and one
minibatch update; then the implied rollout bound and the update share per env step.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ppo  # noqa: E402


def per_call_us(fn, n, repeats=7):
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--num-minibatches", type=int, default=4)
    cli = parser.parse_args()
    torch.set_num_threads(1)
    args = ppo.check_args(ppo.Args(num_envs=cli.num_envs, num_steps=cli.num_steps, num_minibatches=cli.num_minibatches))
    envs = ppo.make_envs(args)
    obs_np, _ = envs.reset(seed=1)
    agent = ppo.Agent(envs)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    obs = torch.as_tensor(obs_np)
    actions_np = envs.action_space.sample()

    figures = {}
    figures["env step (numpy vector env + episode statistics)"] = per_call_us(lambda: envs.step(actions_np), 2000)

    def policy():
        with torch.inference_mode():
            return agent.get_action_and_value(obs)
    figures["policy forward + sample (get_action_and_value)"] = per_call_us(policy, 2000)

    buf = torch.zeros((args.num_steps, args.num_envs) + obs.shape[1:])
    action, log_prob, _, value = policy()
    np_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

    def conversions():
        buf[3] = obs
        torch.as_tensor(obs_np, dtype=torch.float32)
        action.cpu().numpy()
        np_buf[3] = obs_np[:, 0]
        np_buf[4] = obs_np[:, 1]
    figures["conversions + buffer writes"] = per_call_us(conversions, 5000)

    mb = args.num_envs * args.num_steps // args.num_minibatches
    b_obs = torch.randn(mb, *obs.shape[1:])
    b_actions = torch.randint(0, 2, (mb,))
    b_log_probs, b_values, b_adv, b_ret = (torch.randn(mb) for _ in range(4))
    b_log_probs = b_log_probs.abs().neg()

    def update():
        loss, stats = ppo.ppo_loss(agent, b_obs, b_actions, b_log_probs, b_values, b_adv, b_ret, args)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        optimizer.step()
    figures[f"one minibatch update ({mb} samples)"] = per_call_us(update, 300)

    for name, us in figures.items():
        print(f"{name:55s} {us:9.1f} us")
    rollout_us = sum(list(figures.values())[:3])
    updates_per_step = args.update_epochs * args.num_minibatches / args.num_steps
    update_us = list(figures.values())[3] * updates_per_step
    print(f"rollout step bound (sum of the above)                   {rollout_us:9.1f} us "
          f"-> {args.num_envs / rollout_us * 1e6:,.0f} env steps/s")
    print(f"update cost per rollout step                            {update_us:9.1f} us")
    print(f"implied bound with updates                              "
          f"{args.num_envs / (rollout_us + update_us) * 1e6:,.0f} env steps/s")


if __name__ == "__main__":
    main()
