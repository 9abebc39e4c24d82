"""Threads by workload (torch_threads: one for MLPs, the cores for a CNN, a share of them under
torchrun, --torch-threads or OMP_NUM_THREADS over the choice), the CNN's channels-last layout (the
same numbers as channels first), and image runs that repeat exactly with the threads they choose."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo

VECTOR = gym.spaces.Box(-1, 1, (4,), np.float32)
IMAGE = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
DICT_WITH_IMAGE = gym.spaces.Dict({"camera": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), "speed": VECTOR})


@pytest.fixture
def machine(monkeypatch):
    """A machine of 6 cores for this process, no OMP_NUM_THREADS, not under torchrun."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    return monkeypatch


def test_one_thread_for_mlps_and_the_cores_for_a_cnn(machine):
    args = ppo.Args()
    assert ppo.torch_threads(args, VECTOR) == 1
    assert ppo.torch_threads(args, gym.spaces.Discrete(5)) == 1
    assert ppo.torch_threads(args, IMAGE) == 6
    assert ppo.torch_threads(args, DICT_WITH_IMAGE) == 6  # an image part: the Agent gives it a CNN
    machine.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 processes on this machine: a share each
    assert ppo.torch_threads(args, IMAGE) == 1
    machine.setenv("LOCAL_WORLD_SIZE", "2")
    assert ppo.torch_threads(args, IMAGE) == 3
    assert ppo.torch_threads(args, VECTOR) == 1


def test_the_flag_and_omp_num_threads_win(machine):
    assert ppo.torch_threads(ppo.Args(torch_threads=3), VECTOR) == 3
    assert ppo.torch_threads(ppo.Args(torch_threads=2), IMAGE) == 2
    machine.setenv("OMP_NUM_THREADS", "5")
    machine.setattr(torch, "get_num_threads", lambda: 5)  # what torch read from OMP_NUM_THREADS at import
    assert ppo.torch_threads(ppo.Args(), IMAGE) == 5
    assert ppo.torch_threads(ppo.Args(), VECTOR) == 5
    assert ppo.torch_threads(ppo.Args(torch_threads=1), IMAGE) == 1
    machine.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun sets OMP_NUM_THREADS=1 itself: the share is taken
    assert ppo.torch_threads(ppo.Args(), IMAGE) == 3


def test_train_runs_on_the_threads_it_chose(in_tmp, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ppo.train(ppo.parse_args(["--env-id", "toy_envs:ImageObs-v0", "--num-envs", "2", "--num-steps", "16",
                              "--total-timesteps", "32"]))
    assert torch.get_num_threads() == cores
    ppo.train(ppo.parse_args(["--num-envs", "2", "--num-steps", "16", "--total-timesteps", "32"]))
    assert torch.get_num_threads() == 1
    ppo.train(ppo.parse_args(["--num-envs", "2", "--num-steps", "16", "--total-timesteps", "32",
                              "--torch-threads", "2"]))
    assert torch.get_num_threads() == 2


def test_the_cnn_computes_in_channels_last_memory_the_numbers_of_channels_first():
    cnn = ppo.NatureCNN(IMAGE)
    convolutions = [m for m in cnn.convolutions if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convolutions)
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    x = obs.float() / 255.0  # channels first, as CleanRL computes it
    for layer in cnn.convolutions:
        x = torch.nn.functional.conv2d(x, layer.weight.contiguous(), layer.bias, layer.stride) \
            if isinstance(layer, torch.nn.Conv2d) else layer(x)
    torch.testing.assert_close(cnn(obs), cnn.linear(x), atol=1e-5, rtol=1e-5)
    assert cnn(obs).is_contiguous()  # the heads get plain (batch, 512) features


@pytest.mark.parametrize("env_id", ["BreakoutNoFrameskip-v4", "MinAtar/Breakout-v1"])
def test_an_image_run_repeats_exactly_on_its_threads(in_tmp, monkeypatch, env_id):
    """CPU determinism on the image path, with the threads torch_threads chose (all this machine's cores)."""
    pytest.importorskip("ale_py" if "NoFrameskip" in env_id else "minatar")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    flags = ["--env-id", env_id, "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
             "--update-epochs", "2", "--total-timesteps", "128", "--no-cuda", "--learning-rate", "1e-3"]
    first, second = ppo.train(ppo.parse_args(flags)), ppo.train(ppo.parse_args(flags))
    assert torch.get_num_threads() == ppo.torch_threads(ppo.parse_args(flags), IMAGE)
    for p1, p2 in zip(first.parameters(), second.parameters()):
        assert torch.equal(p1, p2)
