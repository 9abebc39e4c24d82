import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # import ppo
sys.path.insert(0, str(ROOT / "tests"))  # import toy_envs


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs training for more than a few seconds (CI runs them too)")


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from the TensorBoard event files in run_dir, in the order they were written.
    Their names end in time.host.pid.counter, which TensorBoard sorts as text: a run and its resume in one second
    of one process (the tests) read back in reverse when the counter goes from 9 to 10. So they are read through
    links named in written order, as one directory, where a resume's purge_step drops what it redoes."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def written_order(path):  # the numbers in the name as numbers
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.name.split(".")]

    with tempfile.TemporaryDirectory() as ordered:
        for i, path in enumerate(sorted(Path(run_dir).glob("events.out.tfevents.*"), key=written_order)):
            os.symlink(path.resolve(), Path(ordered) / f"events.out.tfevents.{i:06d}")
        events = EventAccumulator(ordered, size_guidance={"scalars": 0, "tensors": 0})
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


def whole_and_resumed(flags, tmp_path, monkeypatch):
    """Train `flags` straight through, then again stopped as by a Ctrl-C during iteration 2 and resumed
    from its checkpoint (written every iteration): (the whole run's agent, the resumed run's agent)."""
    import contextlib
    import io

    import torch

    import ppo

    whole = ppo.train(ppo.parse_args(flags + ["--exp-name", "whole"]))
    calls = {"n": 0}
    real_requested = ppo.stop_on_signal.requested

    def stop_after_two(self):
        calls["n"] += 1
        if calls["n"] == 2:
            self.signum = 2
        return real_requested(self)

    monkeypatch.setattr(ppo.stop_on_signal, "requested", stop_after_two)
    with pytest.raises(ppo.TrainingInterrupted), contextlib.redirect_stderr(io.StringIO()):
        ppo.train(ppo.parse_args(flags + ["--exp-name", "halves"]))
    monkeypatch.setattr(ppo.stop_on_signal, "requested", real_requested)
    (run_dir,) = (tmp_path / "runs").glob("*halves*")
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 2
    return whole, ppo.train(ppo.parse_args(["--resume", str(run_dir)]))
