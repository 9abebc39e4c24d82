"""--recurrent (issue #33): the state zeroed exactly where an episode's first observation comes (the step
after the reset step, under gymnasium 1.x's NEXT_STEP autoreset) and nowhere else, in the rollout, in the
update's replays and in evaluation; the replay gives back the rollout's own log-probs; reset steps stay
out of every loss; a resume ends bit-identical; a memory task that only a memory solves is learned."""


import numpy as np
import pytest
import torch

import ppo
from conftest import whole_and_resumed
import toy_envs  # noqa: F401  (EpisodeClock-v0, RememberCue-v0)

CLOCK = ["--env-id", "toy_envs:EpisodeClock-v0", "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2",
         "--update-epochs", "2", "--total-timesteps", "128", "--checkpoint-every", "0"]


def counting_unroll(self, sequence, state):
    """Stands in for RecurrentLayer.unroll (nn.LSTM or nn.GRU): each unit of its state counts the steps taken
    since it was last zeroed, and outputs the count."""
    counts = state[0] + torch.arange(1, len(sequence) + 1, dtype=sequence.dtype).view(-1, 1, 1)  # (steps, envs, size)
    return counts, (counts[-1:],) + tuple(state[1:])


@pytest.fixture
def recurrent_calls(monkeypatch):
    """Every call of the recurrent layer, as (its input features, its output, whether it was one step of the
    rollout or evaluation rather than a replay), with the counting state in place of the LSTM's."""
    calls = []
    real_forward = ppo.RecurrentLayer.forward

    def recording_forward(self, features, memory):
        output = real_forward(self, features, memory)
        calls.append((features.detach().clone(), output.detach().clone(), memory.starts is None))
        return output

    monkeypatch.setattr(ppo.RecurrentLayer, "unroll", counting_unroll)
    monkeypatch.setattr(ppo.RecurrentLayer, "forward", recording_forward)
    return calls


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_state_starts_afresh_exactly_at_each_episodes_first_observation(in_tmp, recurrent_calls, kind):
    """EpisodeClock's observation [t, final] has been read after t + 1 steps of its episode: at every row of
    every call (rollout, the batched replay, each minibatch's replay, evaluation), the counting state must
    say t + 1. A state zeroed one step early (at the reset step itself, as a port of gymnasium 0.29's `done`
    would) says 1 on the final observation and 2 on the next episode's first; one never zeroed runs on."""
    ppo.train(ppo.parse_args(CLOCK + ["--recurrent", kind, "--eval-episodes", "3"]))
    kinds = {"rollout": 0, "replay": 0}
    for features, output, one_step in recurrent_calls:
        torch.testing.assert_close(output[:, 0], features[:, 0] + 1, rtol=0, atol=0)
        kinds["rollout" if one_step else "replay"] += 1
    assert kinds["rollout"] >= 2 * 16 + 3 * 2 + 2  # 2 rollouts of 16 steps; 3 eval episodes of 2+ steps, 2 reset steps
    assert kinds["replay"] == 2 * (1 + 2 * 2)  # per iteration: the batched pass, then 2 epochs x 2 minibatches
    # the batched replay saw the reset steps (their values bootstrap truncations), and truncations happened
    batched = recurrent_calls[16][0]
    assert len(batched) == 16 * 4 and (batched[:, 1] == 1).sum() >= 8


def test_reset_steps_stay_out_of_every_loss(in_tmp, loss_inputs):
    """The final observation ([t, 1]) is seen only at a reset step: no minibatch may hold one, and each epoch's
    minibatches hold every real step once (whole envs: 2 of 4 each)."""
    ppo.train(ppo.parse_args(CLOCK + ["--recurrent", "lstm", "--total-timesteps", "64"]))
    assert len(loss_inputs) == 2 * 2
    for epoch in (loss_inputs[:2], loss_inputs[2:]):
        obs = torch.cat([o for o, _ in epoch])
        assert (obs[:, 1] == 0).all()
        # the real steps of the rollout: 64 less its reset steps, each of them once
        assert len(obs) == len(loss_inputs[0][0]) + len(loss_inputs[1][0]) and 64 - 16 <= len(obs) < 64


def test_the_first_update_replays_the_rollouts_own_log_probs(in_tmp, monkeypatch):
    """The rollout samples each step from the state it carried; the update replays whole envs from the state
    the rollout began with. Before the first optimizer step the weights are the rollout's, so the replayed
    log-probs of the rollout's actions must be the rollout's own, the ratio 1 to 1e-6 (a state replayed from
    the wrong start, or zeroed one step early or late, moves them by far more)."""
    own, first_loss = [], {}
    real_sample, real_minibatches, real_loss = ppo.Agent.sample, ppo.RecurrentMemory.minibatches, ppo.ppo_loss

    def recording_sample(self, actor_out, x):
        action = real_sample(self, actor_out, x)
        log_probs = torch.log_softmax(self.action_logits(actor_out, x), -1)
        own.append(log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1))
        return action

    def recording_minibatches(self, resets, num_minibatches):
        batches = real_minibatches(self, resets, num_minibatches)
        first_loss.setdefault("inds", batches[0][0])
        return batches

    def recording_loss(agent, obs, actions, old_logprobs, *rest):
        if "ratio" not in first_loss:
            with torch.no_grad():
                _, new_logprobs, _, _ = agent.get_action_and_value(obs, actions, rest[-1])
            first_loss.update(old=old_logprobs.clone(), ratio=(new_logprobs - old_logprobs).exp())
        return real_loss(agent, obs, actions, old_logprobs, *rest)

    monkeypatch.setattr(ppo.Agent, "sample", recording_sample)
    monkeypatch.setattr(ppo.RecurrentMemory, "minibatches", recording_minibatches)
    monkeypatch.setattr(ppo, "ppo_loss", recording_loss)
    ppo.train(ppo.parse_args(["--env-id", "toy_envs:RememberCue-v0", "--num-envs", "4", "--num-steps", "32",
                              "--num-minibatches", "2", "--total-timesteps", "128", "--recurrent", "lstm",
                              "--checkpoint-every", "0"]))
    rollout_own = torch.stack(own[:32]).reshape(-1)  # (steps * envs,), in the batch's order
    inds = torch.as_tensor(first_loss["inds"])
    assert len(inds) > 32  # two whole envs, less their reset steps
    torch.testing.assert_close(first_loss["old"], rollout_own[inds], rtol=0, atol=1e-6)
    torch.testing.assert_close(first_loss["ratio"], torch.ones_like(first_loss["ratio"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_resumed_recurrent_run_ends_bit_identical_to_an_uninterrupted_one(in_tmp, monkeypatch, kind):
    """NestedObs-v0's episodes last 4 steps + the reset step, so each rollout of 5 steps ends where the
    state has just been zeroed: a resume, which resets the envs (new episodes, zero states), sees what the
    run saw. The replay, the minibatches of whole envs and the random states all continue exactly."""
    flags = ["--env-id", "toy_envs:NestedObs-v0", "--num-envs", "2", "--num-steps", "5", "--num-minibatches", "2",
             "--update-epochs", "2", "--total-timesteps", "40", "--checkpoint-every", "1", "--recurrent", kind]
    whole, resumed = whole_and_resumed(flags, in_tmp, monkeypatch)
    assert any(name.startswith("recurrent.rnn.") for name in whole.state_dict())
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_segmented_replay_equals_the_lstm_stepped_one_step_at_a_time():
    """RecurrentLayer cuts the sequence where episodes start and runs nn.LSTM over each stretch; the same
    numbers come from stepping it one step at a time and zeroing by hand, as ppo_atari_lstm.py does."""
    torch.manual_seed(0)
    layer = ppo.RecurrentLayer("lstm", 3, 5)
    steps, envs = 12, 3
    features = torch.randn(steps * envs, 3)
    resets = np.zeros((steps, envs), dtype=bool)
    resets[[2, 7], 0], resets[5, 1] = True, True
    start = ppo.RecurrentMemory(tuple(torch.randn(1, envs, 5) for _ in range(2)))
    replayed = layer(features, start.replay(resets))
    state, outputs = start.state, []
    for t in range(steps):
        if t > 0:
            state = tuple(s * torch.as_tensor(~resets[t - 1]).view(1, envs, 1) for s in state)
        output, state = layer.rnn(features.view(steps, envs, 3)[t : t + 1], state)
        outputs.append(output[0])
    torch.testing.assert_close(replayed, torch.cat(outputs), rtol=0, atol=1e-6)


def test_only_a_memory_solves_remember_cue(in_tmp):
    """RememberCue-v0 asks at the 4th step for the cue shown at the 1st: 1 with a memory, 0 on average without."""
    flags = ["--env-id", "toy_envs:RememberCue-v0", "--total-timesteps", "20000", "--eval-episodes", "50",
             "--checkpoint-every", "0"]
    returns = {}
    for kind in ["none", "lstm"]:
        agent = ppo.train(ppo.parse_args(flags + ["--recurrent", kind, "--exp-name", kind]))
        returns[kind] = ppo.evaluate(agent, ppo.parse_args(flags + ["--recurrent", kind]), 50, torch.device("cpu"))
    assert returns["lstm"].mean() == 1.0
    assert returns["none"].mean() < 0.5


def test_a_saved_recurrent_model_evaluates_with_its_flags_and_names_them_without(in_tmp, capsys):
    flags = ["--env-id", "toy_envs:RememberCue-v0", "--total-timesteps", "512", "--recurrent", "gru", "--save-model"]
    assert ppo.main(flags) == 0
    (model,) = (in_tmp / "runs").glob("*/ppo.cleanrl_model")
    assert ppo.main(["--env-id", "toy_envs:RememberCue-v0", "--eval-only", "--model-path", str(model),
                     "--eval-episodes", "2", "--recurrent", "gru"]) == 0
    capsys.readouterr()
    assert ppo.main(["--env-id", "toy_envs:RememberCue-v0", "--eval-only", "--model-path", str(model),
                     "--eval-episodes", "2"]) == 2
    assert "--recurrent" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--num-envs", "2", "--num-minibatches", "4"], "--recurrent: each minibatch takes whole envs, and --num-minibatches 4 is more than the 2 envs"),
    (["--recurrent-size", "0"], "--recurrent-size must be positive"),
])
def test_recurrent_flags_that_cannot_work_are_refused_in_one_line(in_tmp, capsys, flags, message):
    assert ppo.main(["--env-id", "CartPole-v1", "--recurrent", "lstm", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (in_tmp / "runs").exists()


def test_a_resume_may_not_add_or_drop_the_memory(in_tmp, capsys):
    assert ppo.main(["--env-id", "CartPole-v1", "--total-timesteps", "512", "--checkpoint-every", "1"]) == 0
    (run_dir,) = (in_tmp / "runs").iterdir()
    capsys.readouterr()
    assert ppo.main(["--resume", str(run_dir), "--recurrent", "lstm"]) == 2
    assert "--recurrent" in capsys.readouterr().err


def test_cartpole_novel_hides_the_velocities_and_nothing_else():
    import sys

    sys.path.insert(0, str(ppo_root() / "benchmarks"))
    import gymnasium as gym
    import memory_envs  # noqa: F401

    hidden, plain = gym.make("CartPoleNoVel-v1"), gym.make("CartPole-v1")
    (a, _), (b, _) = hidden.reset(seed=3), plain.reset(seed=3)
    for _ in range(20):
        assert a[1] == a[3] == 0 and a[0] == b[0] and a[2] == b[2] and b[1] != 0
        (a, _, done, _, _), (b, *_) = hidden.step(1), plain.step(1)
        if done:
            break
    assert hidden.spec.max_episode_steps == 500  # CartPole-v1's time limit, inside


@pytest.mark.slow
def test_the_memory_benchmark_runs_and_tabulates(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ppo_root() / "benchmarks" / "memory.py"), "--seeds", "1",
                             "--total-timesteps", "512", "--eval-episodes", "2", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ppo.py")]
    assert [row.split(" | ")[0] for row in rows] == ["| ppo.py --recurrent lstm", "| ppo.py --recurrent gru",
                                                     "| ppo.py, no memory"]


def ppo_root():
    from pathlib import Path

    return Path(ppo.__file__).resolve().parent
