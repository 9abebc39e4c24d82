"""Where a training iteration's time goes: each piece of ppo.py's loop timed alone, or in a real run.

    python benchmarks/profile_step.py [--num-envs 4] [--num-steps 128] [--num-minibatches 4] [--threads 1]
    python benchmarks/profile_step.py --run --env-id Hopper-v4 --total-timesteps 20480   # any ppo.py flags

--run trains with ppo.train (the flags after --run are ppo.py's) and times, inside that run, each
layer of the env stack (every vector wrapper and, for a sync vector env, every wrapper of its envs:
time spent in the layer itself, its inner layers subtracted), the rollout's policy (get_action), the
batched pass after the rollout (its log-probs and values), and the update's forward and loss,
backward and optimizer step; the rest of train is "other". Each timed call costs about a
microsecond more, so the shares are close to, not exactly, an untimed run's.

Without --run (CartPole-v1 only):

Prints microseconds per call (median of repeats) for the pieces of one rollout step (env step,
policy forward, action sampling, host/tensor conversions and buffer writes), for what runs once
per iteration (the batched log-prob/value pass, the advantages, the logging) and for one
minibatch update (forward and loss, backward, Adam). Then it adds them up per iteration, and
prints the bound the issue asks about: env step plus policy forward with sampling, alone.
Run it alone: timings on a shared machine mean nothing.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ppo  # noqa: E402


def per_call_us(fn, n, repeats=9):
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(times)


ACTIVE = set()  # the keys of the timed calls in progress


def timed(owner, name, totals, key, unless=None):
    """Replace owner.name by a wrapper that adds each call's wall seconds to totals[key], except for
    calls made inside a timed call of key `unless` (which counts them as its own)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if unless in ACTIVE or key in ACTIVE:
            return original(*args, **kwargs)
        ACTIVE.add(key)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
            ACTIVE.discard(key)

    setattr(owner, name, wrapper)


def env_layers(envs):
    """(label, env) for each layer of the env stack, outermost first: the vector wrappers, the vector
    env, then (a sync vector env) the wrappers of its first env down to the env itself."""
    layers, env = [], envs
    while True:
        layers.append((f"vector: {type(env).__name__}", env))
        if not hasattr(env, "env"):
            break
        env = env.env
    if hasattr(env, "envs"):  # SyncVectorEnv: one chain per env, all timed, labelled by the first's
        chains = []
        for sub in env.envs:
            chain = []
            while True:
                chain.append(sub)
                if not hasattr(sub, "env"):
                    break
                sub = sub.env
            chains.append(chain)
        for depth, first in enumerate(chains[0]):
            layers.append((f"in each env: {type(first).__name__}", [chain[depth] for chain in chains]))
    return layers


def profile_run(argv):
    """Train with ppo.py's flags argv and print where the wall time went."""
    totals, order = {}, []
    make_envs = ppo.make_envs

    def make_timed_envs(*args, **kwargs):
        envs = make_envs(*args, **kwargs)
        for label, layer in env_layers(envs):
            label += " (again)" * order.count(label)  # one key a layer: two wrappers of a class are two rows
            order.append(label)
            for env in layer if isinstance(layer, list) else [layer]:
                timed(env, "step", totals, label)
        return envs

    ppo.make_envs = make_timed_envs
    timed(ppo.Agent, "get_action", totals, "rollout: policy (get_action)")
    loss = "update: forward and loss"
    batch = "after the rollout: its log-probs and values (get_action_and_value, get_value)"
    timed(ppo.Agent, "get_action_and_value", totals, batch, unless=loss)
    timed(ppo.Agent, "get_value", totals, batch, unless=loss)
    timed(ppo, "ppo_loss", totals, loss)
    timed(torch.Tensor, "backward", totals, "update: backward")
    timed(ppo.ClippedAdam, "step", totals, "update: optimizer step")
    args = ppo.parse_args(["--checkpoint-every", "0", *argv])
    start = time.perf_counter()
    ppo.train(args)
    wall = time.perf_counter() - start
    inclusive = [totals.get(label, 0.0) for label in order]
    exclusive = {label: inclusive[i] - (inclusive[i + 1] if i + 1 < len(order) else 0.0) for i, label in enumerate(order)}
    exclusive[order[-1]] = inclusive[-1]
    rest = {key: value for key, value in totals.items() if key not in exclusive}
    print(f"\n{args.env_id}, {args.total_timesteps:,} steps, {args.num_envs} envs x {args.num_steps} steps, "
          f"{args.num_minibatches} minibatches x {args.update_epochs} epochs: train() {wall:.3f} s wall\n")
    print("| where | s | share |\n|---|---|---|")
    rows = [("env step, in all", inclusive[0] if order else 0.0), *exclusive.items(), *rest.items(),
            ("other (storage, advantages, logging, progress, ...)", wall - (inclusive[0] if order else 0.0)
             - sum(rest.values()))]
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} | {seconds / wall:.1%} |")


def main():
    if "--run" in sys.argv:
        profile_run([arg for arg in sys.argv[1:] if arg != "--run"])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--num-minibatches", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (ppo.train uses 1)")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    args = ppo.Args(num_envs=cli.num_envs, num_steps=cli.num_steps, num_minibatches=cli.num_minibatches)
    ppo.check_args(args)
    envs = ppo.make_envs(args, args.num_envs)
    obs_np, _ = envs.reset(seed=1)
    agent = ppo.Agent(envs)
    optimizer = ppo.ClippedAdam(agent.parameters(), lr=args.learning_rate, eps=1e-5, max_grad_norm=args.max_grad_norm)
    obs = torch.as_tensor(obs_np)
    with torch.inference_mode():
        action = agent.get_action(obs)
    action_np = action.numpy()

    step = {}
    step["env step (numpy vector env + episode statistics)"] = per_call_us(lambda: envs.step(action_np), 2000)
    with torch.inference_mode():
        step["policy: get_action (actor MLP + Gumbel-max sampling)"] = per_call_us(lambda: agent.get_action(obs), 2000)
        obs_buf = torch.zeros((args.num_steps, args.num_envs) + obs.shape[1:])
        action_buf = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
        np_buf = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)

        def conversions():  # the loop's per-step copies: obs and action in, action out, env output in
            obs_buf[3] = obs
            action_buf[3] = action
            action.cpu().numpy()
            torch.as_tensor(obs_np, dtype=torch.float32)
            np_buf[3] = obs_np[:, 0]
            np_buf[4] = obs_np[:, 1]
            np_buf[5] = obs_np[:, 2]
        step["host/tensor conversions + buffer writes"] = per_call_us(conversions, 5000)

    batch = args.num_envs * args.num_steps
    b_obs = torch.randn(batch, *obs.shape[1:])
    b_actions = torch.randint(0, 2, (batch,))
    rewards = np.ones((args.num_steps, args.num_envs), dtype=np.float32)
    dones = np.random.default_rng(0).random((args.num_steps, args.num_envs)) < 0.05
    once = {}

    def batched_pass():
        with torch.no_grad():
            agent.get_action_and_value(b_obs, b_actions)
            agent.get_value(obs)
    once["log-probs and values of the whole rollout (one call)"] = per_call_us(batched_pass, 300)
    values = np.random.default_rng(1).standard_normal((args.num_steps, args.num_envs), dtype=np.float32)
    once["advantages (GAE, numpy)"] = per_call_us(
        lambda: ppo.compute_gae(rewards, values, values[0], dones, dones, args.gamma, args.gae_lambda), 300)
    writer = SummaryWriter(tempfile.mkdtemp(prefix="ppo-profile-"))
    add_scalar_us = per_call_us(lambda: writer.add_scalar("losses/value_loss", 0.5, 1), 2000)
    once["logging (10 scalars a iteration; +2 per finished episode)"] = 10 * add_scalar_us
    writer.close()

    mb = batch // args.num_minibatches
    mb_obs, mb_actions = b_obs[:mb], b_actions[:mb]
    mb_log_probs, mb_values, mb_advantages, mb_returns = (torch.randn(mb) for _ in range(4))
    mb_log_probs = mb_log_probs.abs().neg()
    # The three phases of an update run in sequence, as in train: timing each alone would miss
    # how they disturb each other's caches.
    phases = {"zero_grad + forward + loss": [], "backward": [], "ClippedAdam step": []}
    for repeat in range(10):
        spent = [0.0, 0.0, 0.0]
        for _ in range(200):
            t0 = time.perf_counter()
            optimizer.zero_grad()
            loss, _ = ppo.ppo_loss(agent, mb_obs, mb_actions, mb_log_probs, mb_values, mb_advantages, mb_returns, args)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
            spent = [spent[0] + t1 - t0, spent[1] + t2 - t1, spent[2] + t3 - t2]
        if repeat > 0:  # the first is the warm-up
            for times, seconds in zip(phases.values(), spent):
                times.append(seconds / 200 * 1e6)
    update = {name: statistics.median(times) for name, times in phases.items()}

    for title, figures in (("per rollout step", step), ("once per iteration", once),
                           (f"per minibatch update ({mb} samples)", update)):
        print(title)
        for name, us in figures.items():
            print(f"  {name:58s} {us:9.1f} us")
    updates = args.update_epochs * args.num_minibatches
    per_iteration = {"rollout": args.num_steps * sum(step.values()) / 1e3, "once": sum(once.values()) / 1e3,
                     "updates": updates * sum(update.values()) / 1e3}
    total = sum(per_iteration.values())
    print(f"per iteration of {batch} env steps: rollout {per_iteration['rollout']:.1f} ms, "
          f"once {per_iteration['once']:.1f} ms, {updates} updates {per_iteration['updates']:.1f} ms; "
          f"sum {total:.1f} ms -> {batch / total * 1e3:,.0f} env steps/s")
    bound = sum(list(step.values())[:2])
    print(f"bound of env step + policy forward with sampling alone: {bound:.1f} us per step of "
          f"{args.num_envs} envs -> {args.num_envs / bound * 1e6:,.0f} env steps/s")


if __name__ == "__main__":
    main()
