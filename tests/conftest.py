import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # import ppo
sys.path.insert(0, str(ROOT / "tests"))  # import toy_envs


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs training for more than a few seconds (CI runs them too)")


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from the TensorBoard event files in run_dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def free_port() -> int:
    """A TCP port on localhost that nothing listens on (for a rendezvous or a process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory, so runs/ lands in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def loss_inputs(monkeypatch):
    """Every minibatch ppo.ppo_loss sees during the test, as (observations, actions)."""
    import ppo

    calls = []
    real_loss = ppo.ppo_loss

    def recording_loss(agent, obs, actions, *rest):
        calls.append((obs.clone(), actions.clone()))
        return real_loss(agent, obs, actions, *rest)

    monkeypatch.setattr(ppo, "ppo_loss", recording_loss)
    return calls
