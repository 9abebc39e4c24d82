"""Cases found in review: minibatch sizes, action spaces, resume and evaluation rules, signals late in a run."""

import os
import re
import signal

import numpy as np
import pytest
import torch

import ppo
import toy_envs
from conftest import read_scalars
from test_train import run_cli


def only_run_dir(cwd):
    (run_dir,) = list((cwd / "runs").iterdir())
    return run_dir


def test_minibatches_keep_two_real_transitions_when_every_step_ends_an_episode(in_tmp, loss_inputs):
    """Counter1-v0 ends an episode at every step, so every other step is a reset step: the most the
    batch can lose. The flags check_args accepts still leave 2 real transitions per minibatch."""
    ppo.train(ppo.Args(env_id="toy_envs:Counter1-v0", num_envs=1, num_steps=8, num_minibatches=2, update_epochs=1,
                       total_timesteps=32))
    assert [len(obs) for obs, _ in loss_inputs] == [2] * 8  # 4 iterations x 2 minibatches of the 4 real steps
    assert torch.cat([obs for obs, _ in loss_inputs]).unique().tolist() == [0.0]  # only real transitions (obs 0), never a reset step's
    # One more minibatch could hold a single transition, whose std is NaN: refused before training.
    with pytest.raises(ppo.ConfigError, match="--num-minibatches 3 is too many for 1 envs x 8 steps"):
        ppo.check_args(ppo.Args(env_id="toy_envs:Counter1-v0", num_envs=1, num_steps=8, num_minibatches=3))


def test_any_number_of_minibatches_that_keeps_two_real_transitions(in_tmp, loss_inputs):
    """Minibatches split the real transitions as evenly as they can (CleanRL: the batch must divide)."""
    ppo.train(ppo.Args(num_envs=3, num_steps=10, num_minibatches=4, update_epochs=1, total_timesteps=30))
    sizes = [len(obs) for obs, _ in loss_inputs]
    assert len(sizes) == 4 and max(sizes) - min(sizes) <= 1 and sum(sizes) >= 28  # at most 2 reset steps


def test_discrete_actions_that_start_at_one(in_tmp):
    """Discrete(3, start=1): the agent picks 0..2, the env receives 1..3, and the agent learns which pays."""
    toy_envs.ShiftedDiscreteEnv.received_actions.clear()
    ppo.train(ppo.Args(env_id="toy_envs:ShiftedDiscrete-v0", num_envs=4, num_steps=32, num_minibatches=2,
                       learning_rate=1e-2, ent_coef=0.0, total_timesteps=30 * 128))
    received = np.array(toy_envs.ShiftedDiscreteEnv.received_actions)
    assert set(received.tolist()) == {1, 2, 3}
    assert np.mean(received[:256] == 3) < 0.45  # about a third at first ...
    assert np.mean(received[-256:] == 3) > 0.8  # ... then mostly the action that pays


def test_box_actions_of_more_than_one_dimension(in_tmp):
    toy_envs.BoxActionEnv.received_actions.clear()
    agent = ppo.train(ppo.Args(env_id="toy_envs:MatrixAction-v0", num_envs=2, num_steps=16, num_minibatches=2,
                               total_timesteps=64))
    assert agent.actor[-1].out_features == 6 and agent.actor_logstd.shape == (1, 6)
    received = np.array(toy_envs.BoxActionEnv.received_actions)
    # the env's own shape (it refuses any other); reset steps call no step(), hence fewer than 64
    assert received.shape[1:] == (2, 3) and 50 < len(received) < 64
    assert np.abs(received).max() <= 0.5 and (np.abs(received) == 0.5).mean() > 0.3  # clipped to its bounds


def test_stats_of_the_loss_hold_no_autograd_graph():
    args = ppo.Args()
    envs = ppo.make_envs(ppo.Args(), 1)
    agent = ppo.Agent(envs)
    obs, actions = torch.randn(16, 4), torch.randint(0, 2, (16,))
    loss, stats = ppo.ppo_loss(agent, obs, actions, torch.zeros(16), torch.zeros(16), torch.randn(16),
                               torch.randn(16), args)
    assert loss.requires_grad
    assert not any(value.requires_grad for value in stats.values())


# Resume: flags not given keep the run's values; any flag given wins, unless it changes what the agent sees.

def stopped_half_way(in_tmp, *flags):
    """A finished 2-iteration run whose checkpoint says 4: resuming it trains iterations 3 and 4."""
    ppo.train(ppo.parse_args(["--num-envs", "2", "--num-steps", "32", "--num-minibatches", "1",
                              "--total-timesteps", "128", *flags]))
    run_dir = only_run_dir(in_tmp)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["args"]["total_timesteps"] = 256
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    return run_dir


def logged_learning_rates(run_dir):
    return [round(value, 8) for _, value in read_scalars(run_dir)["charts/learning_rate"]]


def test_resume_keeps_the_runs_flags_unless_given(in_tmp):
    run_dir = stopped_half_way(in_tmp, "--learning-rate", "1e-3", "--no-anneal-lr")
    ppo.train(ppo.parse_args(["--resume", str(run_dir)]))
    assert logged_learning_rates(run_dir) == [1e-3] * 4  # the run's own rate, not annealed


def test_resume_takes_a_flag_given_equal_to_its_default(in_tmp):
    """--anneal-lr is the default; given on resume, it still overrides the run's --no-anneal-lr."""
    run_dir = stopped_half_way(in_tmp, "--learning-rate", "1e-3", "--no-anneal-lr")
    ppo.train(ppo.parse_args(["--resume", str(run_dir), "--anneal-lr"]))
    assert logged_learning_rates(run_dir) == [1e-3, 1e-3, 1e-3 * (1 - 2 / 4), 1e-3 * (1 - 3 / 4)]


@pytest.mark.parametrize("flags, name", [(["--gamma", "0.9"], "gamma"), (["--norm-obs"], "norm-obs"),
                                         (["--norm-reward"], "norm-reward"), (["--no-clip-action"], "clip-action"),
                                         (["--seed", "2"], "seed"), (["--hidden-size", "32"], "hidden-size"),
                                         (["--activation", "relu"], "activation"), (["--no-ortho-init"], "ortho-init"),
                                         (["--log-std-init", "-1"], "log-std-init")])
def test_resume_refuses_flags_that_change_what_the_agent_sees(in_tmp, flags, name):
    run_dir = stopped_half_way(in_tmp)
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(ppo.ConfigError, match=f"cannot change --{name} \\(was "):
        ppo.train(ppo.parse_args(["--resume", str(run_dir), *flags]))
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_a_checkpoint_from_before_the_network_flags_resumes_with_their_defaults(in_tmp):
    run_dir = stopped_half_way(in_tmp)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for name in ["hidden_size", "activation", "ortho_init", "log_std_init"]:
        del checkpoint["args"][name]
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    ppo.train(ppo.parse_args(["--resume", str(run_dir)]))
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert resumed["iteration"] == 4 and resumed["args"]["hidden_size"] == 64
    with pytest.raises(ppo.ConfigError, match=r"cannot change --hidden-size \(was 64, now 32\)"):
        ppo.train(ppo.parse_args(["--resume", str(run_dir), "--hidden-size", "32"]))


def evaluation_inputs(monkeypatch, model_path, *flags):
    inputs = []
    real_greedy = ppo.Agent.get_greedy_action
    monkeypatch.setattr(ppo.Agent, "get_greedy_action", lambda self, x, *memory: inputs.append(x.clone()) or real_greedy(self, x, *memory))
    ppo.evaluate_saved_model(ppo.parse_args(["--env-id", "toy_envs:BoxAction-v0", "--eval-only", "--eval-episodes",
                                             "2", "--model-path", str(model_path), *flags]))
    return torch.cat(inputs)


def test_eval_only_normalises_observations_as_the_model_was_trained(in_tmp, monkeypatch):
    """The model says whether its inputs were normalised; --norm-obs does not change that."""
    tiny = ["--num-steps", "32", "--num-minibatches", "2", "--total-timesteps", "64", "--save-model"]
    ppo.train(ppo.parse_args(["--env-id", "toy_envs:BoxAction-v0", *tiny, "--exp-name", "normalised"]))
    ppo.train(ppo.parse_args(["--env-id", "toy_envs:BoxAction-v0", *tiny, "--exp-name", "raw", "--no-norm-obs"]))
    runs = in_tmp / "runs"
    normalised_model = next(runs.glob("*__normalised__*")) / "normalised.cleanrl_model"
    raw_model = next(runs.glob("*__raw__*")) / "raw.cleanrl_model"
    # raw observations are about 100; normalised ones about 0
    assert abs(evaluation_inputs(monkeypatch, normalised_model, "--no-norm-obs").mean()) < 3
    assert evaluation_inputs(monkeypatch, raw_model, "--norm-obs").mean() > 90


# Signals late in a run: the last iteration's update, saving the model, evaluation.

def signal_once_in(monkeypatch, target, name, signum, when=lambda: True):
    """Patch target.name to send this process `signum` (once) on a call for which when() holds."""
    real = getattr(target, name)
    sent = []

    def sending(*args, **kwargs):
        if not sent and when():
            sent.append(1)
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, sending)
    return sent


LATE = dict(num_envs=2, num_steps=32, num_minibatches=1, total_timesteps=4 * 64, checkpoint_every=3)


def test_a_signal_in_the_last_update_stops_with_exit_143_and_a_checkpoint(in_tmp, monkeypatch):
    calls = []
    real_check = ppo.check_finite
    monkeypatch.setattr(ppo, "check_finite", lambda *a: calls.append(1) or real_check(*a))
    sent = signal_once_in(monkeypatch, ppo, "ppo_loss", signal.SIGTERM, when=lambda: len(calls) == 3)
    with pytest.raises(ppo.TrainingInterrupted) as stopped:
        ppo.train(ppo.Args(**LATE, save_model=True, eval_episodes=2))
    assert sent and stopped.value.exit_code == 143
    run_dir = only_run_dir(in_tmp)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 4  # the last one
    assert not (run_dir / "ppo.cleanrl_model").exists()  # an interrupted run is resumed, not saved
    assert "eval/episodic_return" not in read_scalars(run_dir)


@pytest.mark.parametrize("during", ["saving the model", "evaluation"])
def test_a_signal_after_training_still_exits_130(in_tmp, monkeypatch, during):
    if during == "saving the model":
        sent = signal_once_in(monkeypatch, ppo, "model_state_dict", signal.SIGINT)
    else:
        sent = signal_once_in(monkeypatch, ppo.Agent, "get_greedy_action", signal.SIGINT)
    with pytest.raises(ppo.TrainingInterrupted) as stopped:
        ppo.train(ppo.Args(**LATE, save_model=True, eval_episodes=1000))
    assert sent and stopped.value.exit_code == 130
    run_dir = only_run_dir(in_tmp)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 4
    evaluated = [value for _, value in read_scalars(run_dir).get("eval/episodic_return", [])]
    assert len(evaluated) < 1000  # evaluation stopped early, or never started


def test_checkpoint_every_0_writes_no_checkpoint_even_when_stopped(in_tmp, monkeypatch):
    signal_once_in(monkeypatch, ppo, "ppo_loss", signal.SIGINT)
    with pytest.raises(ppo.TrainingInterrupted):
        ppo.train(ppo.Args(**dict(LATE, checkpoint_every=0)))
    assert not list(in_tmp.rglob("checkpoint.pt*"))
    ppo.train(ppo.Args(**dict(LATE, checkpoint_every=0)))
    assert not list(in_tmp.rglob("checkpoint.pt*"))


def test_checkpoint_holds_every_random_state(in_tmp):
    ppo.train(ppo.Args(**LATE))
    checkpoint = torch.load(only_run_dir(in_tmp) / "checkpoint.pt", weights_only=True)
    rng = checkpoint["processes"][0]["rng"]
    assert set(rng) == {"torch", "numpy", "cuda"}
    assert rng["cuda"] == ([] if not torch.cuda.is_initialized() else rng["cuda"])


def test_console_line_says_progress_return_speed_and_time(tmp_path):
    result = run_cli("--num-envs", "1", "--num-steps", "64", "--num-minibatches", "2", "--total-timesteps", "256",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"step 256/256 \(100%\)  mean return \(last 20\) \d+\.\d\d  SPS [\d,]+  "
                        r"elapsed 0:00:\d\d  left 0:00:00", last), last


@pytest.mark.parametrize("label, defaults", [("Box", ppo.BOX_DEFAULTS), ("images", ppo.IMAGE_DEFAULTS)])
def test_help_shows_values_for_discrete_box_and_images(tmp_path, label, defaults):
    result = run_cli("--help", cwd=tmp_path)
    help_text = re.sub(r"[│\s]+", " ", result.stdout)  # tyro's box, unwrapped
    for name, value in defaults.items():
        flag = "--" + name.replace("_", "-")
        entry = re.search(re.escape(flag) + r"(?:, --no-\S+)? (INT |FLOAT )?(.*?)\(default: ([^)]+)\)", help_text)
        assert entry, flag
        metavar, description, default = entry.groups()
        assert metavar or isinstance(value, bool), flag  # INT or FLOAT, no {None}|INT
        assert default == str(getattr(ppo.Args(), name)), flag  # ppo.py's own value
        shown = re.search(r"\(" + label + r": ([^)]+)\)", description)
        assert shown, f"{flag} does not show its {label} value"
        assert (shown.group(1) == str(value)) if isinstance(value, bool) else (float(shown.group(1)) == value), flag


# Issue #22: resume and presets do what they say.

def learning_rates_stepped(monkeypatch):
    """The rate of every optimizer step taken during the test (what trains, not what is logged)."""
    rates = []
    real_step = ppo.ClippedAdam.step
    monkeypatch.setattr(ppo.ClippedAdam, "step", lambda self: rates.append(self.param_groups[0]["lr"]) or real_step(self))
    return rates


def test_resume_trains_at_the_learning_rate_given_when_annealing_is_off(in_tmp, monkeypatch):
    run_dir = stopped_half_way(in_tmp, "--no-anneal-lr")  # trained at 2.5e-4, which the checkpoint holds
    rates = learning_rates_stepped(monkeypatch)
    ppo.train(ppo.parse_args(["--resume", str(run_dir), "--learning-rate", "1e-4"]))
    assert rates == [1e-4] * 2 * 4  # 2 iterations x 4 epochs x 1 minibatch
    assert logged_learning_rates(run_dir) == [2.5e-4, 2.5e-4, 1e-4, 1e-4]


def test_resume_with_annealing_turned_off_trains_at_the_learning_rate_flag(in_tmp, monkeypatch):
    """The checkpoint holds the annealed rate of its last iteration (1.25e-4); --no-anneal-lr means --learning-rate."""
    run_dir = stopped_half_way(in_tmp)
    rates = learning_rates_stepped(monkeypatch)
    ppo.train(ppo.parse_args(["--resume", str(run_dir), "--no-anneal-lr"]))
    assert rates == [2.5e-4] * 2 * 4
    assert logged_learning_rates(run_dir) == [2.5e-4, 1.25e-4, 2.5e-4, 2.5e-4]


def test_flags_given_on_resume_reach_training(in_tmp, loss_inputs):
    """Every flag a resume may change is the one it trains with: here the minibatches and epochs."""
    run_dir = stopped_half_way(in_tmp)
    loss_inputs.clear()
    ppo.train(ppo.parse_args(["--resume", str(run_dir), "--num-minibatches", "2", "--update-epochs", "3"]))
    assert len(loss_inputs) == 2 * 3 * 2  # 2 iterations x 3 epochs x 2 minibatches
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)["args"]
    assert (saved["num_minibatches"], saved["update_epochs"]) == (2, 3)


@pytest.mark.parametrize("env_id", list(ppo.PRESETS))
def test_a_preset_from_python_is_the_preset_of_the_command_line(env_id):
    from_command_line = ppo.parse_args(["--env-id", env_id, "--preset", "tuned"])  # extras: requirements-dev.txt
    assert ppo.with_env_defaults(ppo.Args(env_id=env_id, preset="tuned")) == from_command_line
    # a field set in Python wins, as a flag given does
    assert ppo.with_env_defaults(ppo.Args(env_id=env_id, preset="tuned", seed=7, update_epochs=3)) == \
        ppo.parse_args(["--env-id", env_id, "--preset", "tuned", "--seed", "7", "--update-epochs", "3"])


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "toy_envs:BoxAction-v0", "CartPole-v1", "toy_envs:ImageObs-v0"])
def test_args_from_python_train_what_the_command_line_trains(env_id, capsys):
    """train(Args(env_id="Hopper-v5")) once trained a Box env with the Discrete defaults (4 envs x 128
    steps, 4 epochs, no normalisation) while the command line gave ppo_continuous_action.py's."""
    assert ppo.with_env_defaults(ppo.Args(env_id=env_id)) == ppo.parse_args(["--env-id", env_id])
    # a field set in Python wins, and the line printed names what was taken
    assert ppo.with_env_defaults(ppo.Args(env_id=env_id, num_steps=64, seed=3)) == \
        ppo.parse_args(["--env-id", env_id, "--num-steps", "64", "--seed", "3"])
    printed = capsys.readouterr().out
    if "Box" in env_id or "Pendulum" in env_id:
        assert "num_envs=1 (Args: 4), num_steps=2048 (Args: 128)" in printed and "norm_obs=True (Args: False)" in printed
    elif "Image" in env_id:
        assert "num_envs=8 (Args: 4), clip_coef=0.1 (Args: 0.2)" in printed
    else:
        assert printed == ""  # CartPole: nothing to take, nothing said


def test_train_from_python_applies_the_preset_it_records(in_tmp, loss_inputs):
    ppo.train(ppo.Args(env_id="CartPole-v1", preset="tuned", total_timesteps=256))  # one batch of 8 x 32
    assert len(loss_inputs) == 20  # the preset's 20 epochs of 1 minibatch, not CleanRL's 4 x 4
    saved = torch.load(only_run_dir(in_tmp) / "checkpoint.pt", weights_only=True)["args"]
    assert saved == dict(vars(ppo.Args(env_id="CartPole-v1", preset="tuned", total_timesteps=256)),
                         **{k: v for k, v in ppo.PRESETS["CartPole-v1"].items() if k != "total_timesteps"})
    table = read_text_summary(only_run_dir(in_tmp))
    assert "|preset|tuned|" in table and "|update_epochs|20|" in table and "|learning_rate|0.001|" in table


def read_text_summary(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    return events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()


def test_a_command_line_flag_equal_to_cleanrls_value_still_wins_over_the_preset(in_tmp, loss_inputs):
    """--update-epochs 4 is CleanRL's value; given with --preset tuned it wins over the preset's 20."""
    ppo.train(ppo.parse_args(["--env-id", "CartPole-v1", "--preset", "tuned", "--total-timesteps", "256",
                              "--update-epochs", "4"]))
    assert len(loss_inputs) == 4


def test_resume_refuses_a_preset_the_run_was_not_trained_with(in_tmp):
    run_dir = stopped_half_way(in_tmp)
    before = (run_dir / "checkpoint.pt").read_bytes()
    with pytest.raises(ppo.ConfigError, match=r"cannot change --preset \(was 'none', now 'tuned'\)"):
        ppo.train(ppo.parse_args(["--resume", str(run_dir), "--preset", "tuned"]))
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def evaluation_points(run_dir):
    return [step for step, _ in read_scalars(run_dir).get("eval/episodic_return", [])]


def test_a_resumed_evaluation_logs_each_episode_once(in_tmp, monkeypatch, capsys):
    """Counter-v0 episodes last 5 steps (6 greedy calls with the reset step): a signal at call 14
    stops the evaluation after 2 of its 4 episodes. The resumed run evaluates again, whole, and a
    finished run resumed again logs nothing more."""
    calls = []
    real_greedy = ppo.Agent.get_greedy_action
    monkeypatch.setattr(ppo.Agent, "get_greedy_action", lambda self, x, *memory: calls.append(1) or real_greedy(self, x, *memory))
    signal_once_in(monkeypatch, ppo.Agent, "get_greedy_action", signal.SIGINT, when=lambda: len(calls) == 14)
    flags = ["--env-id", "toy_envs:Counter-v0", "--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2",
             "--total-timesteps", "64", "--eval-episodes", "4"]
    with pytest.raises(ppo.TrainingInterrupted):
        ppo.train(ppo.parse_args(flags))
    run_dir = only_run_dir(in_tmp)
    assert len(calls) >= 14 and evaluation_points(run_dir) == []  # the stopped evaluation is not logged
    monkeypatch.setattr(ppo.Agent, "get_greedy_action", real_greedy)
    ppo.train(ppo.parse_args(["--resume", str(run_dir)]))
    assert evaluation_points(run_dir) == [0, 1, 2, 3]
    for _ in range(2):  # finished and evaluated: nothing to log again, however often it is resumed
        capsys.readouterr()
        ppo.train(ppo.parse_args(["--resume", str(run_dir)]))
        assert evaluation_points(run_dir) == [0, 1, 2, 3]
        assert "evaluation is logged already" in capsys.readouterr().out


# Found by tests/test_flag_combinations.py.

def test_box_actions_of_shape_scalar_train(in_tmp):
    agent = ppo.train(ppo.parse_args(["--env-id", "toy_envs:ScalarBox-v0", "--num-steps", "32", "--num-minibatches",
                                      "2", "--total-timesteps", "64", "--eval-episodes", "1"]))
    assert agent.actor_logstd.shape == (1, 1)


def test_an_evaluation_that_never_ends_stops_with_one_line(in_tmp, monkeypatch):
    monkeypatch.setattr(ppo, "MAX_EVAL_EPISODE_STEPS", 50)
    with pytest.raises(ppo.TrainingError, match="evaluation: an episode of toy_envs:Endless-v0 lasted over 50 steps"):
        ppo.train(ppo.parse_args(["--env-id", "toy_envs:Endless-v0", "--num-envs", "2", "--num-steps", "16",
                                  "--num-minibatches", "2", "--total-timesteps", "32", "--eval-episodes", "1"]))
