"""The Nature CNN's cost on a CPU, option by option: what ppo.py's image path could change.

    python benchmarks/cnn_cpu.py                 # Atari's (4, 84, 84) frames, torch_threads' choice
    python benchmarks/cnn_cpu.py --threads 1 --options default channels-first

For each option, the median milliseconds of the three calls an iteration of ppo.py makes at
ppo_atari.py's defaults (8 envs x 128 steps, minibatches of 256):
- rollout: the policy on 8 observations (`get_action`, inference mode), 128 calls an iteration;
- batched: log-probs and values of the 1,024 steps after the rollout, in one call;
- update: one minibatch of 256, `ppo_loss`, backward and ClippedAdam's step, 16 calls an iteration
  (--minibatch changes the size: per observation, is a larger minibatch cheaper?);
and the seconds an iteration would take from these (128 rollout calls + 1 batched + 16 updates),
against the default's. The options (--options picks some):
- default: what ppo.py runs (float32, the convolutions' weights and inputs in channels-last memory,
  oneDNN's convolutions as torch picks them);
- channels-first: the same in torch's usual (contiguous, NCHW) memory format, as CleanRL runs it;
- no-mkldnn: torch.backends.mkldnn.enabled = False (torch's own convolutions);
- bf16-autocast: torch.autocast("cpu", torch.bfloat16) around the forward passes (a CPU without
  native bfloat16, AVX512-BF16 or AMX, emulates it);
- compile: torch.compile (inductor) of the agent's trunk; its compilation time is printed apart.
Timings on a shared machine mean nothing: run it alone.
"""

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ppo  # noqa: E402
from profile_step import per_call_us  # noqa: E402  (the median over repeats of a call's time)

OPTIONS = ["default", "channels-first", "no-mkldnn", "bf16-autocast", "compile"]


def median_ms(fn, calls, repeats):
    return per_call_us(fn, calls, repeats) / 1e3  # (after one call to warm up, and for compile, to compile)


def measure(option, cli):
    torch.manual_seed(1)
    torch.backends.mkldnn.enabled = option != "no-mkldnn"
    space = gym.spaces.Box(0, 255, cli.shape, np.uint8)
    envs = SimpleNamespace(single_observation_space=space, single_action_space=gym.spaces.Discrete(4))
    agent = ppo.Agent(envs)
    optimizer = ppo.ClippedAdam(agent.parameters(), lr=2.5e-4, eps=1e-5, max_grad_norm=0.5)
    args = ppo.Args(clip_coef=0.1)
    rng = np.random.default_rng(1)
    rollout_obs = torch.as_tensor(rng.integers(0, 256, (8, *cli.shape), dtype=np.uint8))
    batch_obs = torch.as_tensor(rng.integers(0, 256, (1024, *cli.shape), dtype=np.uint8))
    minibatch_obs = batch_obs[: cli.minibatch] if cli.minibatch <= 1024 else batch_obs.repeat(cli.minibatch // 1024, 1, 1, 1)
    n = minibatch_obs.shape[0]
    actions, old_logprobs = torch.randint(0, 4, (n,)), torch.full((n,), -1.386)
    old_values, advantages, returns = torch.zeros(n), torch.randn(n), torch.randn(n)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if option == "bf16-autocast" else nullcontext
    compile_s = 0.0
    if option == "channels-first":
        cnn = agent.trunk
        cnn.convolutions.to(memory_format=torch.contiguous_format)
        cnn.forward = lambda x: cnn.linear(cnn.convolutions((x.float() * cnn.scale).contiguous()))
    if option == "compile":
        agent.trunk = torch.compile(agent.trunk)
        start = time.perf_counter()
        with torch.inference_mode():
            agent.get_action(rollout_obs)
            agent.get_action_and_value(batch_obs)
        loss, _ = ppo.ppo_loss(agent, minibatch_obs, actions, old_logprobs, old_values, advantages, returns, args)
        loss.backward()
        optimizer.zero_grad()
        compile_s = time.perf_counter() - start

    def rollout():
        with torch.inference_mode(), autocast():
            agent.get_action(rollout_obs)

    def batched():
        with torch.inference_mode(), autocast():
            agent.get_action_and_value(batch_obs)

    def update():
        with autocast():
            loss, _ = ppo.ppo_loss(agent, minibatch_obs, actions, old_logprobs, old_values, advantages, returns, args)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    result = dict(rollout=median_ms(rollout, 50, cli.repeats), batched=median_ms(batched, 2, cli.repeats),
                  update=median_ms(update, 4, cli.repeats), compile_s=compile_s)
    torch.backends.mkldnn.enabled = True
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: what ppo.py chooses for images")
    parser.add_argument("--options", nargs="+", choices=OPTIONS, default=OPTIONS)
    parser.add_argument("--minibatch", type=int, default=256)
    parser.add_argument("--shape", type=int, nargs=3, default=[4, 84, 84], help="the observation's shape, channels first")
    parser.add_argument("--repeats", type=int, default=5)
    cli = parser.parse_args()
    cli.shape = tuple(cli.shape)
    image = gym.spaces.Box(0, 255, cli.shape, np.uint8)
    threads = cli.threads or ppo.torch_threads(ppo.Args(), image)
    torch.set_num_threads(threads)
    updates = 16 * 256 / cli.minibatch  # the minibatches of one iteration's 4 epochs x 1,024 steps
    print(f"{cli.shape} observations, {threads} torch threads, minibatches of {cli.minibatch}, torch {torch.__version__}\n")
    print("| option | rollout ms (8 obs) | batched ms (1,024 obs) | update ms | iteration s | vs default |")
    print("|---|---|---|---|---|---|")
    baseline = None
    for option in cli.options:
        r = measure(option, cli)
        iteration = (128 * r["rollout"] + r["batched"] + updates * r["update"]) / 1e3
        baseline = baseline or iteration
        compiled = f" (compiled in {r['compile_s']:.0f} s)" if option == "compile" else ""
        print(f"| {option}{compiled} | {r['rollout']:.2f} | {r['batched']:.1f} | {r['update']:.1f} | {iteration:.2f} | "
              f"{baseline / iteration:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
