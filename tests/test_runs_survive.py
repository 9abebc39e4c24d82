"""Runs that survive: checkpoints, resume, interruption, faults, evaluation, video."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ppo
from conftest import ROOT, free_port, read_scalars

# 40 iterations of 4 x 128 steps (about 50 ms each here); a checkpoint every 2 iterations
ITERATIONS = 40
FLAGS = ["--total-timesteps", str(ITERATIONS * 512), "--checkpoint-every", "2", "--save-model"]
ITERATION_TAGS = ["losses/approx_kl", "losses/value_loss", "charts/learning_rate"]


def start(flags, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    return subprocess.Popen([sys.executable, str(ROOT / "ppo.py"), *flags], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint_iteration(run_dir: Path, at_least: int, timeout=60):
    """Poll until the run's checkpoint has at least that many iterations (a kill point mid-run)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] >= at_least:
                return
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def assert_one_contiguous_history(run_dir: Path, iterations=ITERATIONS, batch=512):
    scalars = read_scalars(run_dir)
    for tag in ITERATION_TAGS:
        steps = [step for step, _ in scalars[tag]]
        assert steps == [batch * i for i in range(1, iterations + 1)], tag
    episode_steps = [step for step, _ in scalars["charts/episodic_return"]]
    assert episode_steps == sorted(episode_steps)
    # The learning rate continues its schedule across restarts.
    lrs = [value for _, value in scalars["charts/learning_rate"]]
    np.testing.assert_allclose(lrs, [2.5e-4 * (1 - i / iterations) for i in range(iterations)], rtol=1e-5)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == iterations and checkpoint["global_step"] == iterations * batch
    model = torch.load(run_dir / "ppo.cleanrl_model", weights_only=True)
    assert set(model) == set(checkpoint["agent"])
    for key in model:
        assert torch.equal(model[key], checkpoint["agent"][key])


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_resume_finishes_the_run(tmp_path, sig, code):
    proc = start(FLAGS, tmp_path)
    wait_for_checkpoint_iteration(next_run_dir(tmp_path), 4)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    run_dir = next_run_dir(tmp_path)
    resume_line = out.strip().splitlines()[-1].strip()
    assert resume_line == f"python {ROOT / 'ppo.py'} --resume runs/{run_dir.name}"
    interrupted_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"]
    assert 4 <= interrupted_at < ITERATIONS

    proc = start(["--resume", f"runs/{run_dir.name}"], tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]  # the same run directory
    assert_one_contiguous_history(run_dir)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path):
    rng = random.Random(0)
    proc = start(FLAGS, tmp_path)
    for kill in range(3):
        run_dir = next_run_dir(tmp_path)
        done = torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] if kill else 0
        wait_for_checkpoint_iteration(run_dir, done + 2)
        # somewhere inside the next iteration or two, or a checkpoint write; never past the end
        time.sleep(rng.uniform(0.0, 0.1))
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # a torn checkpoint.pt.tmp may stay behind; checkpoint.pt itself always loads
        torch.load(run_dir / "checkpoint.pt", weights_only=True)  # never broken
        proc = start(["--resume", str(run_dir)], tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert_one_contiguous_history(next_run_dir(tmp_path))


def next_run_dir(cwd: Path, timeout=30) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = list((cwd / "runs").glob("*")) if (cwd / "runs").exists() else []
        if runs:
            assert len(runs) == 1
            return runs[0]
        time.sleep(0.05)
    raise AssertionError("no run directory appeared")


def test_resume_trains_on_from_the_loaded_weights_and_optimizer(in_tmp):
    """The checkpoint's weights and Adam state are loaded into the vector Adam updates (not beside it)."""
    ppo.train(ppo.Args(num_envs=2, num_steps=32, num_minibatches=2, update_epochs=2, total_timesteps=2 * 64))
    path = next_run_dir(in_tmp) / "checkpoint.pt"
    saved = torch.load(path, weights_only=True)
    assert saved["iteration"] == 2 and saved["optimizer"]["steps_taken"] == 2 * 4
    saved["args"]["total_timesteps"] = 4 * 64  # as if the run had been stopped half-way
    torch.save(saved, path)
    agent = ppo.train(ppo.parse_args(["--resume", str(path)]))
    resumed = torch.load(path, weights_only=True)
    assert resumed["iteration"] == 4 and resumed["optimizer"]["steps_taken"] == 4 * 4
    for name, param in agent.named_parameters():
        assert not torch.equal(param, saved["agent"][name]), name  # it trained on ...
        # ... by small Adam steps from the saved weights, not from a fresh initialisation
        assert (param - saved["agent"][name]).abs().max() < 0.05, name


def test_resume_refuses_flags_that_change_the_experiment(in_tmp):
    ppo.train(ppo.Args(num_envs=2, num_steps=32, num_minibatches=1, total_timesteps=128))
    run_dir = next_run_dir(in_tmp)
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ppo.ConfigError, match=r"cannot change --num-envs \(was 2, now 1\)"):
        ppo.train(ppo.parse_args(["--resume", str(run_dir), "--num-envs", "1"]))
    with pytest.raises(ppo.ConfigError, match=r"cannot change --env-id \(was 'CartPole-v1', now 'Acrobot-v1'\)"):
        ppo.train(ppo.parse_args(["--resume", str(run_dir), "--env-id", "Acrobot-v1"]))
    assert sorted(p.name for p in run_dir.iterdir()) == before


@pytest.mark.parametrize("damage, message", [
    ("truncated", "cannot read checkpoint"),
    ("corrupt", "cannot read checkpoint"),
    ("foreign", "is not a ppo.py checkpoint"),
    ("older format", "is a ppo.py checkpoint v2, written by an older ppo.py; this one resumes only ppo.py checkpoint v3"),
    ("pickled code", "cannot read checkpoint .*(Weights only load failed|Unsupported global)"),
    ("missing", "no checkpoint at"),
    ("v3 before torchrun", "lacks world_size, processes: written by an older ppo.py, or damaged"),
])
def test_damaged_checkpoints_give_one_clear_error(in_tmp, damage, message):
    ppo.train(ppo.Args(num_envs=2, num_steps=32, num_minibatches=1, total_timesteps=128))
    path = next_run_dir(in_tmp) / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        path.write_bytes(data[:100] + bytes(256) + data[356:])
    elif damage == "foreign":
        torch.save({"model": torch.zeros(3)}, path)
    elif damage == "older format":
        torch.save({**torch.load(path), "format": "ppo.py checkpoint v2"}, path)
    elif damage == "v3 before torchrun":  # its random states sat at the top, under "rng"
        saved = torch.load(path)
        del saved["world_size"]
        saved["rng"] = saved.pop("processes")[0]["rng"]
        torch.save(saved, path)
    elif damage == "pickled code":
        torch.save({"format": "ppo.py checkpoint v1", "payload": Path("x")}, path)
    else:
        path.unlink()
    with pytest.raises(ppo.ConfigError, match=message) as error:
        ppo.train(ppo.Args(resume=str(path)))
    assert "\n" not in str(error.value)


def test_damaged_checkpoint_on_the_command_line_exits_2(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    result = subprocess.run([sys.executable, str(ROOT / "ppo.py"), "--resume", "checkpoint.pt"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot read checkpoint") and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_planted_nan_stops_with_the_last_checkpoint_intact(in_tmp, monkeypatch):
    real_step = ppo.gym.wrappers.vector.RecordEpisodeStatistics.step
    calls = []

    def step_with_nan(self, actions):
        obs, reward, terminated, truncated, info = real_step(self, actions)
        calls.append(1)
        if len(calls) == 5 * 32 + 7:  # inside iteration 6
            reward = reward.copy()
            reward[0] = np.nan
        return obs, reward, terminated, truncated, info

    monkeypatch.setattr(ppo.gym.wrappers.vector.RecordEpisodeStatistics, "step", step_with_nan)
    with pytest.raises(ppo.TrainingError, match=r"iteration 6: policy_loss is not finite \(nan\)"):
        ppo.train(ppo.Args(num_envs=2, num_steps=32, num_minibatches=1, total_timesteps=640, checkpoint_every=1))
    checkpoint = torch.load(next_run_dir(in_tmp) / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 5
    assert all(torch.isfinite(p).all() for p in checkpoint["agent"].values())


def test_unwritable_output_directory_fails_before_training(in_tmp):
    (in_tmp / "runs").write_text("a file where the runs directory should be")
    with pytest.raises(ppo.ConfigError, match="cannot create the run directory"):
        ppo.train(ppo.Args(num_envs=2, num_steps=32, total_timesteps=128, num_minibatches=1))
    assert (in_tmp / "runs").read_text() == "a file where the runs directory should be"


def test_disk_full_mid_run_keeps_the_last_good_checkpoint(in_tmp, monkeypatch):
    real_save = torch.save
    saves = []

    def failing_save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 3:  # checkpoints at iterations 1, 2, then the disk is full
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ppo.torch, "save", failing_save)
    with pytest.raises(ppo.TrainingError, match="No space left on device; the last good checkpoint is untouched"):
        ppo.train(ppo.Args(num_envs=2, num_steps=32, num_minibatches=1, total_timesteps=320, checkpoint_every=1))
    run_dir = next_run_dir(in_tmp)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 2
    assert not list(run_dir.glob("*.tmp"))


@pytest.mark.slow
def test_evaluation_of_a_trained_model_matches_its_training(in_tmp):
    # rl-baselines3-zoo's CartPole settings: here they end at 500 after 100k steps (seeds 1-6 all did)
    fast = dict(num_envs=8, num_steps=32, num_minibatches=1, update_epochs=20, learning_rate=1e-3, gamma=0.98,
                gae_lambda=0.8, ent_coef=0.0, total_timesteps=100_000, seed=1)
    ppo.train(ppo.Args(**fast, save_model=True, eval_episodes=10))
    run_dir = next_run_dir(in_tmp)
    scalars = read_scalars(run_dir)
    training = np.mean([value for _, value in scalars["charts/episodic_return"]][-20:])
    evaluation = [value for _, value in scalars["eval/episodic_return"]]
    assert len(evaluation) == 10
    # The greedy policy does at least as well as the exploring one it came from, give or take noise.
    assert training > 400
    assert np.mean(evaluation) >= 0.9 * training

    # --eval-only from the saved model gives the same returns (same seed, same greedy policy).
    ppo.evaluate_saved_model(ppo.Args(env_id="CartPole-v1", eval_only=True, eval_episodes=10, seed=1,
                                      model_path=str(run_dir / "ppo.cleanrl_model")))
    eval_dir = [p for p in (in_tmp / "runs").iterdir() if p != run_dir][0]
    assert "ppo-eval" in eval_dir.name
    assert [v for _, v in read_scalars(eval_dir)["eval/episodic_return"]] == evaluation


def test_eval_only_with_a_broken_model_is_one_line(in_tmp):
    (in_tmp / "broken.cleanrl_model").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ppo.ConfigError, match="cannot load model broken.cleanrl_model for CartPole-v1"):
        ppo.evaluate_saved_model(ppo.Args(eval_only=True, model_path="broken.cleanrl_model", eval_episodes=3))
    with pytest.raises(ppo.ConfigError, match="--eval-only needs --model-path"):
        ppo.evaluate_saved_model(ppo.Args(eval_only=True, eval_episodes=3))
    assert sorted(p.name for p in in_tmp.iterdir()) == ["broken.cleanrl_model"]


def test_capture_video_writes_videos(in_tmp):
    pytest.importorskip("moviepy", reason="the video dependency is not installed: pip install moviepy")
    ppo.train(ppo.Args(num_envs=2, num_steps=64, num_minibatches=1, total_timesteps=256,
                       capture_video=True, eval_episodes=1))
    run_name = next_run_dir(in_tmp).name
    assert list((in_tmp / "videos" / run_name).glob("*.mp4"))
    assert list((in_tmp / "videos" / run_name / "eval").glob("*.mp4"))
    assert all(p.stat().st_size > 1000 for p in (in_tmp / "videos").rglob("*.mp4"))


@pytest.mark.slow
def test_second_ctrl_c_quits_at_once_without_breaking_the_checkpoint(tmp_path):
    proc = start(["--total-timesteps", "100000", "--checkpoint-every", "1"], tmp_path)
    run_dir = next_run_dir(tmp_path)
    wait_for_checkpoint_iteration(run_dir, 3)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] >= 3


def test_ctrl_c_before_the_training_loop_is_one_line_and_exit_130(in_tmp, monkeypatch, capsys):
    """Between the flags and the loop (envs made, a torchrun group joined) there is nothing to
    checkpoint yet: a Ctrl-C there says so in one line and exits 130, as one later does, not a traceback."""
    def make_envs(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ppo, "make_envs", make_envs)
    assert ppo.main(["--total-timesteps", "512"]) == 130
    assert capsys.readouterr().err.strip() == "SIGINT: stopped before training began; nothing was trained"


def test_a_signal_during_the_stop_all_reduce_is_kept_for_the_next_iteration(monkeypatch):
    """Under torchrun every process all-reduces its stop flag at each iteration's end. A signal whose
    handler runs just after that all-reduce (Python runs handlers when the collective returns) missed
    it: it must count at the next iteration's, not be overwritten by the all-reduced "no stop"."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        stop = ppo.stop_on_signal()
        real_all_reduce = dist.all_reduce
        all_reduces = []

        def signal_lands_after_the_first_all_reduce(tensor, *args, **kwargs):
            work = real_all_reduce(tensor, *args, **kwargs)
            all_reduces.append(int(tensor))
            if len(all_reduces) == 1:
                stop.request_stop(signal.SIGTERM, None)
            return work

        monkeypatch.setattr(ppo.dist, "all_reduce", signal_lands_after_the_first_all_reduce)
        assert not stop.requested()  # the all-reduce saw no signal: no process stops at this iteration ...
        assert stop.requested() and stop.signum == signal.SIGTERM  # ... every process stops at the next
        assert all_reduces == [0, signal.SIGTERM]
    finally:
        dist.destroy_process_group()
