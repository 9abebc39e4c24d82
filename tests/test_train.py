"""Whole training runs: the CLI, its outputs, bad input, reproducibility and learning."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ppo
from conftest import ROOT, read_scalars

CLEANRL_TAGS = [
    "charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
    "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/old_approx_kl",
    "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
]


def run_cli(*flags, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    return subprocess.run([sys.executable, str(ROOT / "ppo.py"), *flags], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def only_run_dir(cwd):
    run_dirs = list((Path(cwd) / "runs").iterdir())
    assert len(run_dirs) == 1
    return run_dirs[0]


def test_tiny_run_from_the_command_line(tmp_path):
    result = run_cli("--num-envs", "1", "--num-steps", "64", "--total-timesteps", "256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.startswith("CartPole-v1__ppo__1__")
    assert abs(int(run_dir.name.split("__")[-1]) - time.time()) < 300
    scalars = read_scalars(run_dir)
    # 4 iterations of 64 steps; episodes are logged when they end
    assert [step for step, _ in scalars["losses/approx_kl"]] == [64, 128, 192, 256]
    for tag in CLEANRL_TAGS:
        assert scalars[tag], tag
    # linear annealing: iteration i of 4 uses (1 - (i - 1) / 4) of the learning rate
    assert scalars["charts/learning_rate"][0][1] == pytest.approx(2.5e-4)
    assert scalars["charts/learning_rate"][-1][1] == pytest.approx(2.5e-4 / 4)
    assert "step" in result.stdout and "SPS" in result.stdout


def test_help_documents_every_flag(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for field in ppo.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field
    assert "Monte-Carlo" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_help_shows_the_flag_groups_and_no_help_runs_past_two_lines(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "ppo.py"), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, COLUMNS="100"))
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and max(map(len, lines)) <= 100
    titles = [re.match(r"╭─ (.*?) ─", line).group(1) for line in lines if line.startswith("╭─ ")]
    assert titles == ["options", *(f"{group} options" for group in ppo.FLAG_GROUPS)]
    help_column = next(line.index("show this help") for line in lines if "-h, --help" in line)
    help_lines, flag = {}, None  # flag -> how many lines its help takes
    for line in lines:
        if not line.startswith("│ "):
            flag = None
        elif line.startswith("│ --"):
            flag = line[2:].split()[0].rstrip(",")
            help_lines[flag] = 0
        if flag and line[help_column:].strip("│ ") and not line[help_column - 1].strip():  # not the flags' column
            help_lines[flag] += 1
    assert sorted(help_lines) == sorted("--" + name.replace("_", "-") for name in ppo.Args.__dataclass_fields__)
    assert min(help_lines.values()) >= 1 and max(help_lines.values()) <= 2, help_lines


def test_every_flag_is_in_one_help_group():
    grouped = [name for _, names in ppo.FLAG_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(ppo.Args.__dataclass_fields__)


BAD_INPUT = [
    (["--env-id", "CartPol-v1"], "unknown env id 'CartPol-v1'.*did you mean CartPole-v1"),
    (["--env-id", "toy_envs:DictAction-v0"], "action space Dict.*takes Discrete, MultiDiscrete, MultiBinary or Box"),
    (["--env-id", "toy_envs:TextObs-v0"], "whose part 'mission' is a Text, not numbers.*FilterObservation"),
    (["--env-id", "toy_envs:SequenceObs-v0"], "observation space Sequence.*: a Sequence, not numbers"),
    (["--env-id", "toy_envs:VolumeObs-v0"], "observation space Box\\(0.0, 1.0, \\(2, 8, 8, 3\\).*of rank 4.*channels"),
    (["--env-id", "toy_envs:WrongMask-v0"], "action mask has shape \\(4,\\); Discrete\\(3\\) needs \\(3,\\)"),
    (["--env-id", "no_such_module:Env-v0"], "cannot import module 'no_such_module'"),
    (["--total-timesteps", "100"], "--total-timesteps 100 is smaller than one batch .* 512"),
    (["--gamma", "1.5"], "--gamma must be in \\[0, 1\\]"),
    (["--gae-lambda", "-0.1"], "--gae-lambda must be in \\[0, 1\\]"),
    (["--clip-coef", "0"], "--clip-coef must be positive"),
    (["--clip-coef", "1.5"], "--clip-coef must be in \\(0, 1\\)"),
    (["--learning-rate", "-1e-3"], "--learning-rate must be positive"),
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--ent-coef", "-0.1"], "--ent-coef must be >= 0"),
    (["--torch-threads", "-2"], "--torch-threads must be >= 0, got -2"),
    (["--target-kl", "0"], "--target-kl must be positive"),
    (["--exp-name", "a/b"], "--exp-name must be a plain name"),
    (["--num-envs", "1", "--num-steps", "4"], "--num-minibatches 4 is too many for 1 envs x 4 steps"),
    (["--num-envs", "1", "--num-steps", "8", "--num-minibatches", "4"], "as few as 4 transitions are real"),
    (["--env-id", "toy_envs:SameStep-v0"], "autoresets in SAME_STEP mode; the rollout needs NEXT_STEP"),
    # found by tests/test_flag_combinations.py (each a traceback, a hang or files left behind before)
    (["--seed", "-1"], "--seed must be in \\[0, 4294967295\\], got -1"),
    (["--env-id", "toy_envs:EmptyObs-v0"], "observation space Box.*of size 0: nothing to see or do"),
    (["--env-id", "toy_envs:EmptyBox-v0"], "action space Box.*of size 0: nothing to see or do"),
    (["--exp-name", "x" * 230], "--exp-name is too long for a directory name \\(230 bytes\\)"),
    (["--resume", ""], "--resume needs a run directory or a checkpoint"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),
    (["--env-id", "toy_envs:Counter-v0", "--capture-video"], "--capture-video: toy_envs:Counter-v0 cannot render"),
    (["--resume", "runs/nothing-here"], "no checkpoint at runs/nothing-here"),
    (["--eval-only", "--eval-episodes", "3"], "--eval-only needs --model-path"),
    (["--model-path", "x.cleanrl_model"], "--model-path is read only with --eval-only"),
]


@pytest.mark.parametrize("flags, message", BAD_INPUT, ids=[" ".join(f) for f, _ in BAD_INPUT])
def test_bad_input_is_refused_before_anything_is_written(in_tmp, flags, message):
    with pytest.raises(ppo.ConfigError, match=message):
        ppo.train(ppo.parse_args(flags))
    assert list(in_tmp.iterdir()) == []


def test_missing_optional_package_is_named(in_tmp, monkeypatch):
    real_find_spec = ppo.importlib.util.find_spec
    monkeypatch.setattr(ppo.importlib.util, "find_spec",
                        lambda name: None if name in ("wandb", "moviepy") else real_find_spec(name))
    with pytest.raises(ppo.ConfigError, match="pip install wandb"):
        ppo.train(ppo.Args(track=True))
    with pytest.raises(ppo.ConfigError, match="pip install moviepy"):
        ppo.train(ppo.Args(capture_video=True))
    assert list(in_tmp.iterdir()) == []


def test_bad_input_exits_2_with_one_line(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "keep.txt").write_text("earlier results")
    result = run_cli("--env-id", "CartPol-v1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: unknown env id")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["keep.txt"]
    assert (tmp_path / "runs" / "keep.txt").read_text() == "earlier results"


def test_a_run_never_writes_into_an_existing_run_directory(in_tmp):
    now = int(time.time())
    for t in range(now, now + 30):  # every name the run could pick in the next 30 s is taken
        (in_tmp / "runs" / f"CartPole-v1__ppo__1__{t}").mkdir(parents=True)
        (in_tmp / "runs" / f"CartPole-v1__ppo__1__{t}" / "old").write_text("old")
    ppo.train(ppo.Args(num_envs=1, num_steps=32, num_minibatches=1, total_timesteps=32))
    new = [p for p in (in_tmp / "runs").iterdir() if not (p / "old").exists()]
    assert len(new) == 1 and new[0].name.endswith("_1")
    assert all(os.listdir(p) == ["old"] for p in (in_tmp / "runs").iterdir() if p != new[0])


def test_reset_steps_are_not_trained_on(in_tmp, loss_inputs):
    """Under NEXT_STEP autoreset the step after an episode's end only resets the env.

    Counter-v0's observation counts steps; the final observation [5] starts no real
    transition, so it must never reach the loss, while every real one (0..4) must.
    """
    ppo.train(ppo.Args(env_id="toy_envs:Counter-v0", num_envs=2, num_steps=16, num_minibatches=2,
                       update_epochs=1, total_timesteps=96))
    counts = torch.cat([obs for obs, _ in loss_inputs]).flatten()
    assert set(counts.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    # 6 steps per episode (5 real + 1 reset); 96 steps -> 80 real transitions
    assert len(counts) == 80
    scalars = read_scalars(only_run_dir(in_tmp))
    assert {value for _, value in scalars["charts/episodic_return"]} == {5.0}
    assert {value for _, value in scalars["charts/episodic_length"]} == {5.0}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_first_update_of_each_iteration_sees_the_rollout_policy(in_tmp, env_id):
    """The log-probs the update compares against come from one batched call after the rollout.

    They must be the rollout policy's own, for the very actions and observations it played: then
    on the first minibatch of every iteration, before any gradient step, ratio = 1 exactly (up to
    rounding), so old_approx_kl = mean(-log ratio) = 0 and nothing is clipped. With one epoch of
    one minibatch, that minibatch is the one logged. A large learning rate makes every iteration's
    policy differ from the last, so stale or misaligned log-probs would show.
    """
    ppo.train(ppo.parse_args(["--env-id", env_id, "--num-envs", "4", "--num-steps", "64", "--num-minibatches", "1",
                              "--update-epochs", "1", "--learning-rate", "3e-2", "--no-anneal-lr",
                              "--total-timesteps", str(4 * 64 * 6)]))  # parse_args: 4 envs also for Pendulum
    scalars = read_scalars(only_run_dir(in_tmp))
    assert len(scalars["losses/old_approx_kl"]) == 6
    for tag in ("losses/old_approx_kl", "losses/approx_kl", "losses/clipfrac"):
        assert max(abs(value) for _, value in scalars[tag]) < 1e-5, tag
    # ... while the policy did move between iterations (the entropy changed)
    entropies = [value for _, value in scalars["losses/entropy"]]
    assert max(entropies) - min(entropies) > 1e-3


def test_same_seed_same_run(in_tmp):
    args = ppo.Args(num_envs=2, num_steps=128, total_timesteps=2048, seed=3)
    agents = [ppo.train(args), ppo.train(args)]
    first, second = (read_scalars(run_dir) for run_dir in sorted((in_tmp / "runs").iterdir()))
    for tag in CLEANRL_TAGS:
        if tag != "charts/SPS":
            assert first[tag] == second[tag], tag
    for p1, p2 in zip(agents[0].parameters(), agents[1].parameters()):
        assert torch.equal(p1, p2)
    # a different seed gives a different run
    ppo.train(ppo.Args(num_envs=2, num_steps=128, total_timesteps=2048, seed=4))
    third = read_scalars(sorted((in_tmp / "runs").iterdir(), key=os.path.getmtime)[-1])
    assert third["losses/value_loss"] != first["losses/value_loss"]


@pytest.mark.slow
def test_agent_learns_cartpole(in_tmp):
    """Random play scores about 22 on CartPole-v1; this budget reaches far more."""
    args = ppo.Args(num_envs=8, num_steps=32, gamma=0.98, gae_lambda=0.8, update_epochs=20, num_minibatches=1,
                    learning_rate=1e-3, ent_coef=0.0, total_timesteps=30_000, seed=1)
    ppo.train(args)
    returns = [value for _, value in read_scalars(only_run_dir(in_tmp))["charts/episodic_return"]]
    assert np.mean(returns[:20]) < 50  # it started near random play ...
    assert np.mean(returns[-20:]) > 100  # ... and learned (seeds 1-3 here: 172, 156, 313)


@pytest.mark.slow
def test_track_with_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed: pip install wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = run_cli("--track", "--num-envs", "2", "--num-steps", "64", "--total-timesteps", "256", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_name = only_run_dir(tmp_path).name
    offline_runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_name}"))
    assert len(offline_runs) == 1  # wandb's run id is ppo.py's run name
    assert (offline_runs[0] / f"run-{run_name}.wandb").stat().st_size > 0
    assert (offline_runs[0] / "files" / "runs" / run_name).exists()  # the synced TensorBoard logs
