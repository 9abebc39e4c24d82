"""CUDA: training on the GPU, its checkpoint and resume, and nccl under torchrun.

These need a GPU, which CI does not have: they are skipped there, and were run on a lent H100 (see
docs/speed.md, "--cuda"). Everything else about the GPU path shares its code with the CPU tests.
"""

import os
import subprocess
import sys

import pytest
import torch

import ppo
from conftest import ROOT, read_scalars

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_run_checkpoints_resumes_and_evaluates(in_tmp):
    flags = ["--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2", "--total-timesteps", str(4 * 128),
             "--checkpoint-every", "2", "--save-model"]
    agent = ppo.train(ppo.parse_args(flags))
    assert next(agent.parameters()).is_cuda
    (run_dir,) = list((in_tmp / "runs").iterdir())
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["processes"][0]["rng"]["cuda"]  # the CUDA random state is saved
    checkpoint["args"]["total_timesteps"] = 8 * 128  # as if stopped half-way
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    agent = ppo.train(ppo.parse_args(["--resume", str(run_dir), "--eval-episodes", "2"]))
    assert next(agent.parameters()).is_cuda
    scalars = read_scalars(run_dir)
    assert [step for step, _ in scalars["losses/approx_kl"]] == [128 * i for i in range(1, 9)]
    assert len(scalars["eval/episodic_return"]) == 2


def test_nccl_under_torchrun(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                             str(ROOT / "tests" / "torchrun_harness.py"), "--backend", "nccl", "--num-envs", "4",
                             "--num-steps", "32", "--num-minibatches", "2", "--total-timesteps", str(4 * 128),
                             "--checkpoint-every", "2"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    record = torch.load(tmp_path / "harness" / "rank0.pt", weights_only=False)
    assert record["iteration"] == 4 and all(t.is_cuda for t in record["weights"].values())
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["world_size"] == 1


def test_cuda_trains_atari_with_the_cnn(in_tmp):
    pytest.importorskip("ale_py")
    agent = ppo.train(ppo.parse_args(["--env-id", "ALE/Breakout-v5", "--num-envs", "8", "--num-steps", "128",
                                      "--total-timesteps", str(2 * 1024), "--eval-episodes", "1"]))
    assert next(agent.parameters()).is_cuda and isinstance(agent.trunk, ppo.NatureCNN)
    (run_dir,) = list((in_tmp / "runs").iterdir())
    assert len(read_scalars(run_dir)["eval/episodic_return"]) == 1


def test_cuda_trains_a_recurrent_agent_whose_replay_matches_the_cpus(in_tmp):
    """--recurrent on the GPU (cuDNN's LSTM): it trains and evaluates, and its segmented replay gives the CPU's
    numbers for the same weights, states and resets."""
    agent = ppo.train(ppo.parse_args(["--env-id", "CartPole-v1", "--recurrent", "lstm", "--num-envs", "4",
                                      "--num-steps", "32", "--num-minibatches", "2", "--total-timesteps", "256",
                                      "--eval-episodes", "2"]))
    assert agent.recurrent.rnn.weight_hh_l0.is_cuda
    resets = torch.rand(32, 4).numpy() < 0.1
    features = torch.randn(32 * 4, 4)
    state = tuple(torch.randn(1, 4, 128) for _ in range(2))
    on_gpu = agent.recurrent(features.cuda(), ppo.RecurrentMemory(tuple(s.cuda() for s in state)).replay(resets))
    agent.cpu()
    on_cpu = agent.recurrent(features, ppo.RecurrentMemory(state).replay(resets))
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
