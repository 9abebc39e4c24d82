"""Data-parallel training under torchrun (gloo, on the CPU): one agent, every process's episodes in one
run, checkpoints and resume, signals, a dead worker, two "nodes". Each test starts real torchrun jobs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, free_port, read_scalars

HARNESS = ROOT / "tests" / "torchrun_harness.py"
pytestmark = pytest.mark.slow


def start(flags, cwd, nproc=2, torchrun_flags=("--standalone",), new_session=False):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *torchrun_flags, "--nproc-per-node",
                             str(nproc), str(HARNESS), *flags], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=new_session)


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def ranks(cwd, world_size=2):
    return [torch.load(Path(cwd) / "harness" / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def only_run_dir(cwd):
    (run_dir,) = list((Path(cwd) / "runs").iterdir())
    return run_dir


def checkpoint_iteration(run_dir):
    try:
        return torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0


def wait_for_checkpoint(cwd, at_least, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = list((Path(cwd) / "runs").glob("*")) if (Path(cwd) / "runs").exists() else []
        if runs and checkpoint_iteration(runs[0]) >= at_least:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def assert_one_contiguous_history(run_dir, iterations, global_batch):
    scalars = read_scalars(run_dir)
    for tag in ("losses/approx_kl", "charts/learning_rate"):
        assert [step for step, _ in scalars[tag]] == [global_batch * i for i in range(1, iterations + 1)], tag
    episode_steps = [step for step, _ in scalars["charts/episodic_return"]]
    assert episode_steps == sorted(episode_steps)


# 5 iterations of 4 envs (2 in each of 2 processes) x 16 steps: 5 x 2 epochs x 2 minibatches all-reduces
TINY = ["--env-id", "toy_envs:Counter-v0", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
        "--update-epochs", "2", "--total-timesteps", "320", "--checkpoint-every", "2"]


def test_two_processes_train_one_agent(tmp_path):
    code, out = finish(start(TINY, tmp_path))
    assert code == 0, out
    rank0, rank1 = ranks(tmp_path)
    assert rank0["exit_code"] == rank1["exit_code"] == 0
    assert rank0["iteration"] == rank1["iteration"] == 5
    # identical weights at the end: one agent, trained on both processes' gradients
    assert rank0["weights"].keys() == rank1["weights"].keys()
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    # env i of all 4 is seeded seed + i, as in one process: 1, 2 on rank 0, 3, 4 on rank 1
    assert rank0["reset_seeds"] == [1] and rank1["reset_seeds"] == [3]
    # one run directory, with both processes' episodes (Counter-v0 episodes last 5 steps)
    run_dir = only_run_dir(tmp_path)
    scalars = read_scalars(run_dir)
    assert rank0["episodes"] > 0 and rank1["episodes"] > 0
    assert len(scalars["charts/episodic_return"]) == rank0["episodes"] + rank1["episodes"]
    assert {value for _, value in scalars["charts/episodic_return"]} == {5.0}
    assert_one_contiguous_history(run_dir, 5, global_batch=64)
    # one checkpoint, by rank 0, with each process's own random states
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and checkpoint["iteration"] == 5 and checkpoint["global_step"] == 320
    keys = [p["rng"]["numpy"]["state"]["key"] for p in checkpoint["processes"]]
    assert len(keys) == 2 and not torch.equal(keys[0], keys[1])
    assert out.count("step 320/320 (100%)") == 1  # rank 0 alone speaks


def test_a_two_process_run_resumes_with_two_processes(tmp_path):
    code, out = finish(start(TINY, tmp_path))
    assert code == 0, out
    run_dir = only_run_dir(tmp_path)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["args"]["total_timesteps"] = 8 * 64  # as if stopped after 5 of 8 iterations
    torch.save(checkpoint, run_dir / "checkpoint.pt")

    alone = subprocess.run([sys.executable, str(ROOT / "ppo.py"), "--resume", str(run_dir)], cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=str(ROOT / "tests")), capture_output=True, text=True)
    assert alone.returncode == 2
    assert "trained by 2 process(es) and resumes only with as many" in alone.stderr

    code, out = finish(start(["--resume", str(run_dir)], tmp_path))
    assert code == 0, out
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]
    rank0, rank1 = ranks(tmp_path)
    assert rank0["iteration"] == rank1["iteration"] == 8
    assert rank0["reset_seeds"] == [1 + 5 * 4] and rank1["reset_seeds"] == [1 + 5 * 4 + 2]  # new seeds
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    assert_one_contiguous_history(run_dir, 8, global_batch=64)


# 80 iterations of 8 envs (4 in each process) x 128 steps, a checkpoint every 2: long enough to interrupt
ITERATIONS = 80
LONG = ["--num-envs", "8", "--total-timesteps", str(ITERATIONS * 1024), "--checkpoint-every", "2"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_torchrun_stops_every_rank_at_one_iteration(tmp_path, signum):
    """Ctrl-C in a terminal (SIGINT to torchrun's process group) or a scheduler's SIGTERM: torchrun passes
    it to each worker, which checkpoints at the same iteration and exits 128 + signum, with no traceback
    of its own. torchrun itself (torch 2.13) then raises its SignalException, for any script: a
    traceback and exit code 1, which ppo.py cannot change."""
    proc = start(LONG, tmp_path, new_session=True)
    run_dir = wait_for_checkpoint(tmp_path, 4)
    os.killpg(proc.pid, signum)
    code, out = finish(proc)
    rank0, rank1 = ranks(tmp_path)
    assert rank0["exit_code"] == rank1["exit_code"] == 128 + signum, out
    assert rank0["iteration"] == rank1["iteration"] == checkpoint_iteration(run_dir)
    assert 4 <= rank0["iteration"] < ITERATIONS
    assert out.count("resume with:") == 1 and f"--resume {run_dir.relative_to(tmp_path)}" in out
    assert code == 1 and out.count("Traceback") == 1 and f"SignalException: Process {proc.pid} got signal: {signum}" in out
    assert "gloo" not in out.lower() and "KeyboardInterrupt" not in out

    code, out = finish(start(["--resume", str(run_dir)], tmp_path))
    assert code == 0, out
    assert_one_contiguous_history(run_dir, ITERATIONS, global_batch=1024)


def test_a_signal_to_one_process_stops_all_at_one_iteration(tmp_path):
    """SIGTERM to rank 1 alone: the stop flag, all-reduced at each iteration's end, stops rank 0 too."""
    proc = start(LONG, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path, 4)
    os.kill(ranks(tmp_path)[1]["pid"], signal.SIGTERM)
    code, out = finish(proc)
    rank0, rank1 = ranks(tmp_path)
    assert rank0["exit_code"] == rank1["exit_code"] == 143, out
    assert rank0["iteration"] == rank1["iteration"] == checkpoint_iteration(run_dir) < ITERATIONS


def test_a_killed_worker_is_restarted_and_resumes_from_the_checkpoint(tmp_path):
    proc = start(LONG, tmp_path, torchrun_flags=("--standalone", "--max-restarts", "1"))
    run_dir = wait_for_checkpoint(tmp_path, 4)
    os.kill(ranks(tmp_path)[1]["pid"], signal.SIGKILL)
    code, out = finish(proc)
    assert code == 0, out
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]  # no second run directory
    rank0, rank1 = ranks(tmp_path)
    assert rank0["restart"] == rank1["restart"] == 1  # both processes were started again ...
    resumed_at = (rank0["reset_seeds"][0] - 1) // 8  # ... and resumed from a checkpoint: seed 1 + k * 8
    assert resumed_at >= 4 and rank1["reset_seeds"][0] == 1 + resumed_at * 8 + 4
    assert rank0["iteration"] == rank1["iteration"] == ITERATIONS
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    assert_one_contiguous_history(run_dir, ITERATIONS, global_batch=1024)


def test_a_killed_worker_ends_the_job_and_keeps_the_last_checkpoint(tmp_path):
    proc = start(LONG, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path, 4)
    os.kill(ranks(tmp_path)[1]["pid"], signal.SIGKILL)
    code, out = finish(proc)
    assert code != 0
    assert "rank      : 1" in out and "Signal 9 (SIGKILL)" in out  # torchrun names the dead worker
    assert 4 <= torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] < ITERATIONS  # intact


def test_two_nodes_through_a_c10d_rendezvous(tmp_path):
    """Two torchrun commands of one process each, as two machines would start them."""
    rendezvous = ("--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{free_port()}",
                  "--rdzv-id", "test-job")
    nodes = [start(TINY, tmp_path, nproc=1, torchrun_flags=rendezvous) for _ in range(2)]
    results = [finish(node) for node in nodes]
    assert all(code == 0 for code, _ in results), results
    rank0, rank1 = ranks(tmp_path)
    assert rank0["iteration"] == rank1["iteration"] == 5
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    assert_one_contiguous_history(only_run_dir(tmp_path), 5, global_batch=64)


def test_bad_input_is_refused_by_every_rank_and_said_once(tmp_path):
    code, out = finish(start(["--env-id", "CartPol-v1"], tmp_path))
    assert code != 0
    assert out.count("error: unknown env id 'CartPol-v1'") == 1
    assert [r["exit_code"] for r in ranks(tmp_path)] == [2, 2]
    assert not (tmp_path / "runs").exists()


# The update's lines for one minibatch, split over processes whose shares differ in size (each leaves
# out its own reset steps): the stepped weights must be those of one process holding the whole minibatch.
MINIBATCH = 16
SHARES = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]  # 5 and 11 samples: rank 0's, rank 1's


def minibatch_updates(rank, world_size, port, out_dir):
    import torch.distributed as dist

    import ppo

    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    envs = ppo.make_envs(ppo.Args(), 1)
    agent = ppo.Agent(envs)
    optimizer = ppo.ClippedAdam(agent.parameters(), lr=1e-2, eps=1e-5, max_grad_norm=0.5)
    args = ppo.Args()
    gradients = []
    for update in range(3):  # three minibatches of made-up rollout data, the same in every process
        data = torch.Generator().manual_seed(update)
        obs = torch.randn(MINIBATCH, 4, generator=data)
        actions = torch.randint(0, 2, (MINIBATCH,), generator=data)
        old_logprobs, old_values = -torch.rand(MINIBATCH, generator=data), torch.randn(MINIBATCH, generator=data)
        advantages = 3 * torch.randn(MINIBATCH, generator=data) + 1
        returns = torch.randn(MINIBATCH, generator=data)
        mine = torch.tensor(SHARES[rank] if world_size > 1 else range(MINIBATCH))
        loss, _ = ppo.ppo_loss(agent, obs[mine], actions[mine], old_logprobs[mine], old_values[mine],
                               advantages[mine], returns[mine], args)
        optimizer.zero_grad()
        loss.backward()
        ppo.all_reduce_gradients(agent, len(mine))
        gradients.append(torch.cat([p.grad.flatten() for p in agent.parameters()]))
        optimizer.step()
    torch.save({"weights": agent.state_dict(), "gradients": gradients}, Path(out_dir) / f"{world_size}_{rank}.pt")
    if world_size > 1:
        dist.destroy_process_group()


def test_unequal_shares_step_as_one_process_with_the_whole_minibatch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(minibatch_updates, args=(2, free_port(), str(tmp_path)), nprocs=2)
    minibatch_updates(0, 1, None, str(tmp_path))
    alone, rank0, rank1 = [torch.load(tmp_path / f"{name}.pt") for name in ("1_0", "2_0", "2_1")]
    for update in range(3):
        torch.testing.assert_close(rank0["gradients"][update], alone["gradients"][update], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(rank1["gradients"][update], alone["gradients"][update], rtol=1e-5, atol=1e-7)
    for name in alone["weights"]:  # three Adam steps of 1e-2: float rounding leaves them within 1e-6
        torch.testing.assert_close(rank0["weights"][name], alone["weights"][name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rank1["weights"][name], alone["weights"][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("env_id, as_in_one_process", [("Acrobot-v1", True), ("CartPole-v1", False)])
def test_where_two_processes_start_their_envs(tmp_path, env_id, as_in_one_process):
    """Process r resets its 2 envs with seed 1 + 2r. Envs of one Python env per copy (Acrobot) seed copy i
    with 1 + i: the 4 start as one process's 4. CartPole's numpy vector env draws all its copies from
    the one seed it is given: each process's 2 start as a 2-env CartPole seeded 1 + 2r, not as one
    process's 4."""
    import ppo

    flags = ["--env-id", env_id, "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
             "--total-timesteps", "64", "--checkpoint-every", "0"]
    code, out = finish(start(flags, tmp_path))
    assert code == 0, out
    rank0, rank1 = ranks(tmp_path)
    two_processes = np.concatenate([rank0["reset_obs"][0], rank1["reset_obs"][0]])
    one_process = ppo.make_envs(ppo.Args(env_id=env_id), 4).reset(seed=1)[0]
    if as_in_one_process:
        np.testing.assert_array_equal(two_processes, one_process)
    else:
        assert not np.allclose(two_processes, one_process)
        for rank, record in enumerate([rank0, rank1]):
            own = ppo.make_envs(ppo.Args(env_id=env_id), 2).reset(seed=1 + 2 * rank)[0]
            np.testing.assert_array_equal(record["reset_obs"][0], own)


def test_two_processes_train_atari(tmp_path):
    pytest.importorskip("ale_py")
    flags = ["--env-id", "ALE/Breakout-v5", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2",
             "--update-epochs", "1", "--total-timesteps", "256"]
    code, out = finish(start(flags, tmp_path))
    assert code == 0, out
    rank0, rank1 = ranks(tmp_path)
    assert rank0["iteration"] == rank1["iteration"] == 2
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    assert rank0["reset_obs"][0].shape == (2, 4, 84, 84) and rank0["reset_obs"][0].dtype == np.uint8


def test_two_processes_train_one_agent_on_a_dict_env_with_an_action_mask(tmp_path):
    """Any space under torchrun (issue #32): a Dict of an image and a Discrete, with a mask, normalised."""
    flags = ["--env-id", "toy_envs:MaskedNested-v0", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
             "--update-epochs", "2", "--total-timesteps", "128", "--norm-obs", "--eval-episodes", "2"]
    code, out = finish(start(flags, tmp_path))
    assert code == 0, out
    rank0, rank1 = ranks(tmp_path)
    assert rank0["iteration"] == rank1["iteration"] == 2
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    assert any(k.startswith("trunk.cnns.0.") for k in rank0["weights"])  # the image part's CNN, trained as one
    first = rank0["reset_obs"][0]
    assert set(first) == {"observation/camera", "observation/cell", "action_mask"}  # the env's nested Dict, flat
    assert first["observation/camera"].dtype == np.uint8 and first["observation/camera"].shape == (2, 8, 8, 3)
    assert first["action_mask"].shape == (2, 3)
    assert "eval: mean return" in out


def test_two_processes_train_one_recurrent_agent(tmp_path):
    """--recurrent under torchrun (issue #33): each process keeps its own envs' states and replays its own
    envs; the minibatch's gradient is all-reduced, so the LSTM's weights stay one agent's."""
    flags = ["--env-id", "toy_envs:RememberCue-v0", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
             "--update-epochs", "2", "--total-timesteps", "128", "--recurrent", "lstm", "--eval-episodes", "2"]
    code, out = finish(start(flags, tmp_path))
    assert code == 0, out
    rank0, rank1 = ranks(tmp_path)
    assert rank0["iteration"] == rank1["iteration"] == 2
    assert "recurrent.rnn.weight_hh_l0" in rank0["weights"]
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
