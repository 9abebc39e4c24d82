"""Run ppo.py's command line under torchrun, recording what each process did, for tests/test_torchrun.py.

    torchrun --standalone --nproc-per-node 2 tests/torchrun_harness.py --env-id CartPole-v1 ...

Each process writes harness/rank{RANK}.pt in the working directory: its pid (written first, so a
test can kill it), its exit code, the seeds its envs were reset with and the observations they gave, the number of episodes it
finished, the iteration it stopped at, and its agent's final weights. Nothing here changes what
ppo.py computes: the recording wraps functions train() calls.
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ppo  # noqa: E402

rank = int(os.environ.get("RANK", "0"))
record = {"pid": os.getpid(), "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
          "reset_seeds": [], "reset_obs": [], "episodes": 0, "iteration": None, "weights": None, "exit_code": None}
out = Path("harness") / f"rank{rank}.pt"
out.parent.mkdir(exist_ok=True)
torch.save(record, out)


def save():
    torch.save(record, out)


real_make_envs = ppo.make_envs


def make_envs(args, num_envs, video_folder=None):
    envs = real_make_envs(args, num_envs, video_folder)
    real_reset = envs.reset

    def reset(*, seed=None, options=None):
        record["reset_seeds"].append(seed)
        obs, info = real_reset(seed=seed, options=options)
        record["reset_obs"].append(obs.copy())
        return obs, info

    envs.reset = reset
    return envs


real_gather_episodes = ppo.gather_episodes


def gather_episodes(episodes):
    record["episodes"] += len(episodes)
    return real_gather_episodes(episodes)


real_finish_run = ppo.finish_run


def finish_run(run, writer, iteration, agent, *rest):
    record["iteration"] = iteration
    record["weights"] = {name: tensor.clone() for name, tensor in agent.state_dict().items()}
    save()
    return real_finish_run(run, writer, iteration, agent, *rest)


ppo.make_envs, ppo.gather_episodes, ppo.finish_run = make_envs, gather_episodes, finish_run
record["exit_code"] = ppo.main(sys.argv[1:])
save()
sys.exit(record["exit_code"])
