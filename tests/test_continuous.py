"""Continuous (Box) actions: the Gaussian head, action clipping, normalisation, defaults."""

import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo
import toy_envs
from conftest import read_scalars
from test_train import CLEANRL_TAGS

PPO_PY = Path(__file__).resolve().parent.parent / "ppo.py"
TINY = dict(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=2, total_timesteps=64)


def box_agent():
    torch.manual_seed(0)
    envs = gym.make_vec("toy_envs:BoxAction-v0", num_envs=1, vectorization_mode="sync")
    return ppo.Agent(envs)


def test_gaussian_head_against_hand_computed_values():
    agent = box_agent()
    with torch.no_grad():  # mean = bias, whatever the observation
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.tensor([0.0, 1.0]))
        agent.actor_logstd.copy_(torch.tensor([[0.0, math.log(2.0)]]))
    obs = torch.zeros(1, 3)
    action = torch.tensor([[1.0, 1.0]])
    _, log_prob, entropy, _ = agent.get_action_and_value(obs, action)
    # dim 0: N(0, 1) at 1: -1/2 - ln(2 pi)/2; dim 1: N(1, 2) at 1: -ln 2 - ln(2 pi)/2
    expected = -0.5 - 0.5 * math.log(2 * math.pi) - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    assert log_prob.item() == pytest.approx(expected, rel=1e-6)
    # entropy of N(mu, s): 1/2 + ln(2 pi)/2 + ln s, summed over both dimensions
    assert entropy.item() == pytest.approx(1.0 + math.log(2 * math.pi) + math.log(2.0), rel=1e-6)


def test_gaussian_head_matches_torch_distributions():
    agent = box_agent()
    with torch.no_grad():
        agent.actor_logstd.copy_(torch.tensor([[-0.3, 0.4]]))
    obs = torch.randn(64, 3)
    actions = torch.randn(64, 2) * 2
    _, log_prob, entropy, value = agent.get_action_and_value(obs, actions)
    dist = torch.distributions.Normal(agent.actor(obs), agent.actor_logstd.exp().expand(64, 2))
    torch.testing.assert_close(log_prob, dist.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))
    assert log_prob.shape == entropy.shape == value.shape == (64,)
    # Samples follow the same Gaussian: mean and std per dimension, 4 standard errors.
    sampled, _, _, _ = agent.get_action_and_value(torch.zeros(20_000, 3))
    mean = agent.actor(torch.zeros(1, 3))[0]
    torch.testing.assert_close(sampled.mean(0), mean, atol=4 * 1.5 / math.sqrt(20_000), rtol=0)
    torch.testing.assert_close(sampled.std(0), agent.actor_logstd.exp()[0], atol=0.03, rtol=0)
    torch.testing.assert_close(agent.get_greedy_action(torch.zeros(1, 3))[0], mean)


def test_network_flags_shape_the_agent():
    envs = gym.make_vec("toy_envs:BoxAction-v0", num_envs=1, vectorization_mode="sync")
    default = ppo.Agent(envs)  # CleanRL's: 64 wide, tanh, log std 0
    assert default.actor[0].weight.shape == (64, 3) and isinstance(default.critic[3], torch.nn.Tanh)
    assert default.actor_logstd.tolist() == [[0.0, 0.0]]
    agent = ppo.Agent(envs, hidden_size=32, activation="relu", log_std_init=-2.0)
    assert [tuple(p.shape) for p in agent.actor.parameters()] == [(32, 3), (32,), (32, 32), (32,), (2, 32), (2,)]
    assert [tuple(p.shape) for p in agent.critic.parameters()] == [(32, 3), (32,), (32, 32), (32,), (1, 32), (1,)]
    assert all(isinstance(net[i], torch.nn.ReLU) for net in (agent.actor, agent.critic) for i in (1, 3))
    assert agent.actor_logstd.tolist() == [[-2.0, -2.0]]
    # the first policy's std is exp(-2), whatever the observation
    sampled = agent.get_action(torch.zeros(20_000, 3)) - agent.actor(torch.zeros(1, 3))
    torch.testing.assert_close(sampled.std(0), torch.full((2,), math.exp(-2.0)), atol=0.005, rtol=0)


def test_ortho_init_off_is_torchs_default_init():
    envs = gym.make_vec("toy_envs:BoxAction-v0", num_envs=1, vectorization_mode="sync")
    torch.manual_seed(0)
    ortho = ppo.Agent(envs)
    first, last = ortho.actor[0].weight, ortho.actor[4].weight  # (64, 3), (2, 64)
    # orthogonal init: orthonormal columns (rows for the wide last layer) times the gain, zero biases
    torch.testing.assert_close(first.T @ first, 2.0 * torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(last @ last.T, 1e-4 * torch.eye(2), atol=1e-8, rtol=0)
    assert all(not p.any() for name, p in ortho.named_parameters() if name.endswith("bias"))
    torch.manual_seed(0)
    plain = ppo.Agent(envs, ortho_init=False)
    # torch's nn.Linear init: weights and biases uniform in +-1/sqrt(fan_in); the last layers not shrunk
    for net in (plain.actor, plain.critic):
        for layer in (net[0], net[2], net[4]):
            bound = 1 / math.sqrt(layer.in_features)
            assert bound * 0.8 < layer.weight.abs().max() <= bound  # (at least 64 draws)
            assert 0 < layer.bias.abs().max() <= bound
    assert plain.actor[4].weight.abs().max() > 0.1  # orthogonal init's std 0.01 would keep it under 0.05


def test_actions_are_stored_unclipped_and_sent_clipped(in_tmp, loss_inputs):
    toy_envs.BoxActionEnv.received_actions.clear()
    ppo.train(ppo.Args(env_id="toy_envs:BoxAction-v0", **TINY))
    stored_actions = torch.cat([actions for _, actions in loss_inputs])
    received = np.array(toy_envs.BoxActionEnv.received_actions)
    assert stored_actions.abs().max() > 0.5  # std 1 at the start: most samples fall outside [-0.5, 0.5]
    assert np.abs(received).max() <= 0.5
    assert (np.abs(received) == 0.5).mean() > 0.3  # ... and were clipped to the bounds
    # with --no-clip-action the env receives the raw samples
    toy_envs.BoxActionEnv.received_actions.clear()
    ppo.train(ppo.Args(env_id="toy_envs:BoxAction-v0", clip_action=False, **TINY))
    assert np.abs(np.array(toy_envs.BoxActionEnv.received_actions)).max() > 0.5


def test_observations_are_normalised_in_training_and_frozen_in_evaluation(in_tmp, monkeypatch, loss_inputs):
    agent = ppo.train(ppo.Args(env_id="toy_envs:BoxAction-v0", norm_obs=True, save_model=True,
                               **dict(TINY, total_timesteps=256)))
    seen = torch.cat([obs for obs, _ in loss_inputs])
    assert seen.abs().max() <= 10 and abs(seen.mean()) < 1  # raw observations are around 100
    # The saved model carries the statistics it was trained with (mean ~100, std ~5).
    model = torch.load(next((in_tmp / "runs").iterdir()) / "ppo.cleanrl_model", weights_only=True)
    torch.testing.assert_close(model["obs_rms.mean"].float(), torch.full((3,), 100.0), atol=1.5, rtol=0)
    assert torch.all((model["obs_rms.var"].sqrt() > 3) & (model["obs_rms.var"].sqrt() < 7))

    # Evaluation normalises with the statistics it is given and never updates them.
    obs_stats = {"mean": torch.full((3,), 90.0, dtype=torch.float64), "var": torch.full((3,), 4.0, dtype=torch.float64)}
    inputs = []
    real_greedy = agent.get_greedy_action
    monkeypatch.setattr(agent, "get_greedy_action", lambda x, *memory: inputs.append(x.clone()) or real_greedy(x, *memory))
    ppo.evaluate(agent, ppo.Args(env_id="toy_envs:BoxAction-v0"), episodes=3, device="cpu", obs_stats=obs_stats)
    inputs = torch.cat(inputs)
    assert len(inputs) == 3 * 8 + 2  # 3 episodes of 8 steps, and the reset steps between them
    # (100 +- 5 - 90) / 2 is about 5 +- 2.5, clipped at 10: the statistics did not move toward 100
    assert 3.5 < inputs.mean() < 6.5
    assert torch.equal(obs_stats["mean"], torch.full((3,), 90.0, dtype=torch.float64))


def test_saved_model_and_checkpoint_carry_the_normalisation(in_tmp):
    ppo.train(ppo.Args(env_id="toy_envs:BoxAction-v0", save_model=True, norm_obs=True, norm_reward=True, **TINY))
    run_dir = next((in_tmp / "runs").iterdir())
    model = torch.load(run_dir / "ppo.cleanrl_model", weights_only=True)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert set(model) == set(checkpoint["agent"]) | {"obs_rms.mean", "obs_rms.var"}
    assert "actor_logstd" in model
    env_stats = checkpoint["processes"][0]["env_stats"]
    torch.testing.assert_close(model["obs_rms.mean"], env_stats["obs"]["mean"])
    assert set(env_stats) == {"obs", "return"}
    assert env_stats["return"]["count"] > 1


def test_a_model_without_normalisation_is_a_plain_state_dict(in_tmp):
    """CleanRL's ppo.py saves agent.state_dict(): ours, without --norm-obs, holds the same keys and nothing else."""
    ppo.train(ppo.Args(num_envs=2, num_steps=32, num_minibatches=1, total_timesteps=64, save_model=True))
    model = torch.load(next((in_tmp / "runs").iterdir()) / "ppo.cleanrl_model", weights_only=True)
    assert set(model) == {f"{net}.{i}.{kind}" for net in ("actor", "critic") for i in (0, 2, 4)
                          for kind in ("weight", "bias")}


def test_defaults_follow_the_action_space():
    continuous = ppo.parse_args(["--env-id", "Pendulum-v1"])
    assert (continuous.num_envs, continuous.num_steps, continuous.num_minibatches, continuous.update_epochs,
            continuous.learning_rate, continuous.ent_coef, continuous.total_timesteps, continuous.norm_obs,
            continuous.norm_reward) == (1, 2048, 32, 10, 3e-4, 0.0, 1_000_000, True, True)
    assert continuous == ppo.Args(env_id="Pendulum-v1", **ppo.BOX_DEFAULTS)
    discrete = ppo.parse_args(["--env-id", "CartPole-v1"])
    assert (discrete.num_envs, discrete.num_steps, discrete.num_minibatches, discrete.update_epochs,
            discrete.learning_rate, discrete.ent_coef, discrete.total_timesteps, discrete.norm_obs,
            discrete.norm_reward) == (4, 128, 4, 4, 2.5e-4, 0.01, 500_000, False, False)
    assert discrete == ppo.Args()
    # A flag given wins, also when it equals the other space's default.
    given = ppo.parse_args(["--env-id", "Pendulum-v1", "--num-steps", "64", "--ent-coef", "0.01", "--num-envs", "4",
                            "--no-norm-obs"])
    assert (given.num_steps, given.ent_coef, given.num_envs, given.norm_obs, given.update_epochs) == (
        64, 0.01, 4, False, 10)


def test_tiny_pendulum_run_logs_cleanrl_tags_and_the_values_used(in_tmp):
    ppo.train(ppo.parse_args(["--env-id", "Pendulum-v1", "--num-steps", "256", "--num-minibatches", "4",
                              "--total-timesteps", "512"]))
    run_dir = next((in_tmp / "runs").iterdir())
    scalars = read_scalars(run_dir)
    for tag in CLEANRL_TAGS:
        assert scalars[tag], tag
    assert [v for _, v in scalars["charts/episodic_length"]] == [200.0, 200.0]  # truncated by the clock
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    table = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|num_envs|1|" in table and "|update_epochs|10|" in table and "|num_steps|256|" in table


def test_tiny_halfcheetah_run(in_tmp):
    pytest.importorskip("mujoco", reason="MuJoCo is not installed: pip install -r requirements-mujoco.txt")
    ppo.train(ppo.parse_args(["--env-id", "HalfCheetah-v5", "--num-steps", "512", "--num-minibatches", "4",
                              "--update-epochs", "1", "--total-timesteps", "1024"]))
    scalars = read_scalars(next((in_tmp / "runs").iterdir()))
    for tag in CLEANRL_TAGS:
        assert scalars[tag], tag
    assert [v for _, v in scalars["charts/episodic_length"]] == [1000.0]


def test_halfcheetah_trains_without_mujocos_settotalmass_warning(tmp_path):
    # MuJoCo 4 warns once per HalfCheetah env compiled (on stderr and in ./MUJOCO_LOG.TXT); a fresh
    # process, since the warning handler ppo.py sets is MuJoCo's, process-wide.
    pytest.importorskip("mujoco", reason="MuJoCo is not installed: pip install -r requirements-mujoco.txt")
    done = subprocess.run([sys.executable, str(PPO_PY), "--env-id", "HalfCheetah-v5", "--num-envs", "2",
                           "--num-steps", "64", "--num-minibatches", "1", "--update-epochs", "1",
                           "--total-timesteps", "128"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "settotalmass" not in done.stdout + done.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_missing_box2d_is_one_line(in_tmp, monkeypatch):
    def make_vec(env_id, **kwargs):
        raise gym.error.DependencyNotInstalled('Box2D is not installed, you can install it by run `pip install swig` '
                                               'followed by `pip install "gymnasium[box2d]"`')

    monkeypatch.setattr(ppo.gym, "make_vec", make_vec)
    with pytest.raises(ppo.ConfigError, match=r"LunarLander-v3 needs a package .*requirements-box2d.txt"):
        ppo.train(ppo.parse_args(["--env-id", "LunarLander-v3", "--preset", "tuned"]))
    assert list(in_tmp.iterdir()) == []


def test_missing_mujoco_is_one_line(in_tmp, monkeypatch):
    def make_vec(env_id, **kwargs):
        raise gym.error.DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`')

    monkeypatch.setattr(ppo.gym, "make_vec", make_vec)
    with pytest.raises(ppo.ConfigError, match=r"HalfCheetah-v5 needs a package .*requirements-mujoco.txt"):
        ppo.train(ppo.Args(env_id="HalfCheetah-v5"))
    assert list(in_tmp.iterdir()) == []


# --preset tuned (PRESETS) and normalisation for every action space

def test_preset_applies_its_values_and_given_flags_win():
    tuned = ppo.parse_args(["--env-id", "CartPole-v1", "--preset", "tuned"])
    assert tuned == ppo.Args(env_id="CartPole-v1", preset="tuned", **ppo.PRESETS["CartPole-v1"])
    assert (tuned.num_envs, tuned.update_epochs, tuned.total_timesteps) == (8, 20, 100_000)
    given = ppo.parse_args(["--env-id", "CartPole-v1", "--preset", "tuned", "--num-envs", "4", "--seed", "3"])
    assert (given.num_envs, given.seed, given.update_epochs) == (4, 3, 20)
    # Box envs: BOX_DEFAULTS first, then the preset over them
    pendulum = ppo.parse_args(["--env-id", "Pendulum-v1", "--preset", "tuned"])
    assert pendulum == ppo.Args(env_id="Pendulum-v1", preset="tuned", **{**ppo.BOX_DEFAULTS, **ppo.PRESETS["Pendulum-v1"]})
    # without --preset, CleanRL's defaults
    assert ppo.parse_args(["--env-id", "CartPole-v1"]) == ppo.Args()


def test_network_flags_train_and_reach_the_model_and_its_evaluation(in_tmp):
    from test_train import run_cli

    flags = ["--env-id", "toy_envs:BoxAction-v0", "--hidden-size", "16", "--activation", "relu", "--no-ortho-init",
             "--log-std-init", "-1.5", "--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2",
             "--total-timesteps", "64", "--save-model"]
    ppo.train(ppo.parse_args(flags))
    run_dir = next((in_tmp / "runs").iterdir())
    model = torch.load(run_dir / "ppo.cleanrl_model", weights_only=True)
    assert model["actor.2.weight"].shape == model["critic.2.weight"].shape == (16, 16)
    assert model["actor_logstd"].shape == (1, 2) and model["actor_logstd"].ne(-1.5).all()  # trained from -1.5
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {k: checkpoint["args"][k] for k in ("hidden_size", "activation", "ortho_init", "log_std_init")} == dict(
        hidden_size=16, activation="relu", ortho_init=False, log_std_init=-1.5)
    evaluate = ["--env-id", "toy_envs:BoxAction-v0", "--eval-only", "--eval-episodes", "1", "--model-path",
                str(run_dir / "ppo.cleanrl_model")]
    ppo.evaluate_saved_model(ppo.parse_args([*evaluate, "--hidden-size", "16", "--activation", "relu"]))
    refused = run_cli(*evaluate, cwd=in_tmp)  # 64 wide by default: the weights do not fit
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "size mismatch" in refused.stderr and "--hidden-size" in refused.stderr


def test_the_halfcheetah_preset_is_rl_zoos_settings_with_four_changes():
    """rl-zoo's hyperparams/ppo.yml for HalfCheetah, in ppo.py's flags (SB3's vf_coef doubled: its value
    loss is the mean squared error, CleanRL's half of it), but lr 3e-5, gamma 0.99, lambda 0.95 and log std
    -1 (rl-zoo: 2.0633e-5, 0.98, 0.92, -2; docs/presets.md says why)."""
    cheetah = ppo.parse_args(["--env-id", "HalfCheetah-v5", "--preset", "tuned"])
    assert (cheetah.num_envs, cheetah.num_steps, cheetah.num_steps * cheetah.num_envs // cheetah.num_minibatches,
            cheetah.update_epochs, cheetah.learning_rate, cheetah.anneal_lr, cheetah.gamma, cheetah.gae_lambda,
            cheetah.clip_coef, cheetah.ent_coef, cheetah.vf_coef / 2, cheetah.max_grad_norm, cheetah.norm_obs,
            cheetah.norm_reward) == (1, 512, 64, 20, 3e-5, False, 0.99, 0.95, 0.1, 0.000401762, 0.58096, 0.8,
                                     True, True)
    assert (cheetah.hidden_size, cheetah.activation, cheetah.ortho_init, cheetah.log_std_init, cheetah.clip_vloss) == (
        256, "relu", False, -1.0, False)
    # Hopper: ppo_continuous_action.py's defaults; Walker2d: the same batch of 2048 from 8 envs x 256 steps
    assert ppo.parse_args(["--env-id", "Hopper-v5", "--preset", "tuned"]) == ppo.Args(
        env_id="Hopper-v5", preset="tuned", **ppo.BOX_DEFAULTS)
    assert ppo.parse_args(["--env-id", "Walker2d-v5", "--preset", "tuned"]) == ppo.Args(
        env_id="Walker2d-v5", preset="tuned", **{**ppo.BOX_DEFAULTS, "num_envs": 8, "num_steps": 256})
    # Ant: Walker2d's, with the first policy's std 0.37 (log std -1) rather than 1
    assert ppo.parse_args(["--env-id", "Ant-v5", "--preset", "tuned"]) == ppo.Args(
        env_id="Ant-v5", preset="tuned", **{**ppo.BOX_DEFAULTS, "num_envs": 8, "num_steps": 256, "log_std_init": -1.0})


def test_an_env_without_a_preset_is_one_line(in_tmp):
    with pytest.raises(ppo.ConfigError, match="no tuned preset for toy_envs:Counter-v0; there are presets for CartPole-v1"):
        ppo.parse_args(["--env-id", "toy_envs:Counter-v0", "--preset", "tuned"])
    with pytest.raises(ppo.ConfigError, match="no tuned preset for toy_envs:Counter-v0"):
        ppo.train(ppo.Args(env_id="toy_envs:Counter-v0", preset="tuned"))
    assert list(in_tmp.iterdir()) == []


def test_help_lists_the_presets(tmp_path):
    from test_train import run_cli

    help_text = " ".join(run_cli("--help", cwd=tmp_path).stdout.replace("│", " ").split())
    listed = help_text.split("--preset tuned knows ")[1].split(". ─")[0]
    assert listed.split(", ") == list(ppo.PRESETS)


def test_tuned_run_logs_the_values_it_used(in_tmp):
    ppo.train(ppo.parse_args(["--env-id", "CartPole-v1", "--preset", "tuned", "--total-timesteps", "512"]))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((in_tmp / "runs").iterdir())))
    events.Reload()
    table = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|preset|tuned|" in table and "|update_epochs|20|" in table and "|num_envs|8|" in table


def test_normalisation_works_for_discrete_actions_and_resumes(in_tmp, loss_inputs):
    """--norm-obs and --norm-reward with Discrete actions: the agent sees normalised observations, and
    the statistics go into the checkpoint and come back on resume."""
    flags = ["--env-id", "toy_envs:Counter-v0", "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
             "--total-timesteps", "128", "--norm-obs", "--norm-reward"]
    ppo.train(ppo.parse_args(flags))
    assert torch.cat([obs for obs, _ in loss_inputs]).max() < 4  # raw observations are 0..5; normalised, about -1.5..1.5
    run_dir = next((in_tmp / "runs").iterdir())
    stats = torch.load(run_dir / "checkpoint.pt", weights_only=True)["processes"][0]["env_stats"]
    assert set(stats) == {"obs", "return"} and abs(float(stats["obs"]["mean"][0]) - 2.5) < 0.2  # obs 0..5, evenly
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["args"]["total_timesteps"] = 256
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    agent = ppo.train(ppo.parse_args(["--resume", str(run_dir)]))
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)["processes"][0]["env_stats"]
    # the statistics went on from the checkpoint's (128 steps, then 128 more), not from scratch
    assert resumed["obs"]["count"] > stats["obs"]["count"] + 100
    assert resumed["return"]["count"] > stats["return"]["count"] + 100


def gymnasiums_wrappers(envs, args):
    """What make_envs stacked before ClipAndNormalize: gymnasium's five vector wrappers, CleanRL's order."""
    if isinstance(envs.single_action_space, gym.spaces.Box) and args.clip_action:
        envs = gym.wrappers.vector.ClipAction(envs)
    if args.norm_obs:
        envs = gym.wrappers.vector.NormalizeObservation(envs)
        envs = gym.wrappers.vector.TransformObservation(envs, lambda obs: np.clip(obs, -10, 10), envs.observation_space)
    if args.norm_reward:
        envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
        envs = gym.wrappers.vector.ClipReward(envs, -10, 10)
    return envs


@pytest.mark.parametrize("env_id, num_envs, steps, flags", [
    ("Hopper-v5", 2, 400, {}),  # terminations at different steps in the two envs, actions past the bounds
    ("Pendulum-v1", 3, 450, dict(gamma=0.9)),  # truncations only (200 steps), obs float32
    ("Pendulum-v1", 1, 450, dict(norm_obs=False)),  # parts off
    ("Pendulum-v1", 1, 450, dict(norm_reward=False, clip_action=False)),
    ("MountainCar-v0", 2, 300, {}),  # Discrete actions: nothing to clip
])
def test_clip_and_normalize_computes_what_gymnasiums_wrappers_compute(env_id, num_envs, steps, flags):
    """Bit for bit, step by step: observations, rewards, flags, and the running statistics at the end."""
    args = ppo.Args(env_id=env_id, **{**dict(norm_obs=True, norm_reward=True), **flags})  # ppo_continuous_action.py's
    ours = ppo.make_envs(args, num_envs)
    theirs = gymnasiums_wrappers(gym.wrappers.vector.RecordEpisodeStatistics(gym.make_vec(env_id, num_envs=num_envs)),
                                 args)
    assert ours.single_observation_space == theirs.single_observation_space
    assert ours.single_action_space == theirs.single_action_space
    rng = np.random.default_rng(0)
    obs_ours, _ = ours.reset(seed=7)
    obs_theirs, _ = theirs.reset(seed=7)
    np.testing.assert_array_equal(obs_ours, obs_theirs)
    ends = 0
    for _ in range(steps):
        if isinstance(ours.single_action_space, gym.spaces.Box):
            action = (3 * rng.standard_normal((num_envs,) + ours.single_action_space.shape)).astype(np.float32)
        else:
            action = rng.integers(0, ours.single_action_space.n, num_envs)
        step_ours, step_theirs = ours.step(action.copy()), theirs.step(action.copy())
        for a, b in zip(step_ours[:4], step_theirs[:4]):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        ends += int((step_ours[2] | step_ours[3]).sum())
    assert ends >= 2  # the statistics went through episode ends
    wrapper = ppo.find_wrapper(ours, ppo.ClipAndNormalize)
    for attr, on in (("obs_rms", args.norm_obs), ("return_rms", args.norm_reward)):
        if on:
            rms, theirs_rms = getattr(wrapper, attr), getattr(ppo.find_wrapper(theirs, {
                "obs_rms": gym.wrappers.vector.NormalizeObservation,
                "return_rms": gym.wrappers.vector.NormalizeReward}[attr]), attr)
            np.testing.assert_array_equal(rms.mean, theirs_rms.mean)
            np.testing.assert_array_equal(rms.var, theirs_rms.var)
            assert rms.count == theirs_rms.count
        else:
            assert getattr(wrapper, attr) is None


def test_clip_and_normalize_frozen_statistics_stay_put():
    envs = ppo.make_envs(ppo.Args(env_id="Pendulum-v1", norm_obs=True, norm_reward=True), 1)
    envs.reset(seed=1)
    wrapper = ppo.find_wrapper(envs, ppo.ClipAndNormalize)
    wrapper.update_running_mean = False
    before = [(rms.mean.copy(), rms.var.copy(), rms.count) for rms in (wrapper.obs_rms, wrapper.return_rms)]
    for _ in range(20):
        envs.step(np.ones((1, 1), dtype=np.float32))
    for (mean, var, count), rms in zip(before, (wrapper.obs_rms, wrapper.return_rms)):
        np.testing.assert_array_equal(rms.mean, mean)
        np.testing.assert_array_equal(rms.var, var)
        assert rms.count == count
