"""Atari and image observations: ale-py's vector env with CleanRL's preprocessing, the Nature CNN,
whole-game raw scores, and the rest of ppo.py (defaults, checkpoints, evaluation, video) on short runs."""

import importlib.util
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo
from conftest import read_scalars

pytest.importorskip("ale_py", reason="pip install -r requirements-atari.txt")

TINY = ["--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2", "--update-epochs", "1", "--no-cuda"]


class RawRecorder(gym.vector.VectorWrapper):
    """Records what the env itself gives, under every wrapper of make_envs: each step's raw rewards, the
    lives, the env's own terminations (game over), and the actions it was given."""

    def __init__(self, envs):
        super().__init__(envs)
        self.rewards, self.lives, self.game_overs, self.actions = [], [], [], []

    def step(self, actions):
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        self.actions.append(np.array(actions))
        self.rewards.append(rewards.copy())
        self.lives.append(info["lives"].copy())
        self.game_overs.append(terminations | truncations)
        return obs, rewards, terminations, truncations, info

    def game_scores(self):
        """The sum of the raw rewards of each finished game, in the order the games ended."""
        rewards, game_overs = np.array(self.rewards), np.array(self.game_overs)
        scores, running = [], np.zeros(rewards.shape[1])
        for t in range(len(rewards)):
            running += rewards[t]
            for i in np.flatnonzero(game_overs[t]):
                scores.append((t, running[i]))
                running[i] = 0
        return [score for _, score in sorted(scores)]


@pytest.fixture
def recorder(monkeypatch):
    recorders = []
    real = ppo.make_atari_envs

    def recorded(*args, **kwargs):
        recorders.append(RawRecorder(real(*args, **kwargs)))
        return recorders[-1]

    monkeypatch.setattr(ppo, "make_atari_envs", recorded)
    return recorders


def test_the_env_stack_is_cleanrls_atari_preprocessing(recorder):
    """SpaceInvaders pays 5 to 30 points an alien: the agent learns from their sign, episodes end at each
    lost life while the game goes on, the step after a lost life presses FIRE and pays nothing, and the
    statistics hold whole games' raw scores."""
    envs = ppo.make_envs(ppo.Args(env_id="ALE/SpaceInvaders-v5"), 2)
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    envs.reset(seed=1)
    rng = np.random.default_rng(0)
    learned_rewards, terminations, episodes = [], [], []
    for _ in range(2500):
        _, reward, terminated, _, info = envs.step(rng.integers(0, 6, 2))
        learned_rewards.append(reward)
        terminations.append(terminated)
        if "episode" in info:
            episodes += [info["episode"]["r"][i] for i in np.flatnonzero(info["_episode"])]
    raw = recorder[0]
    rewards, lives, game_overs, actions = map(np.array, (raw.rewards, raw.lives, raw.game_overs, raw.actions))
    terminations, learned_rewards = np.array(terminations), np.array(learned_rewards)
    life_lost = (lives[1:] < lives[:-1]) & ~game_overs[1:]  # steps 1.. that lost a life
    assert life_lost.sum() >= 5 and game_overs.sum() >= 2 and rewards.max() >= 5
    np.testing.assert_array_equal(terminations[1:], life_lost | game_overs[1:])  # a lost life ends an episode
    after = np.vstack([np.zeros((2, 2), bool), life_lost])[:-1]  # the step after each lost life
    assert (actions[after] == 1).all()  # FIRE, whatever the agent chose
    assert (learned_rewards[after] == 0).all()
    np.testing.assert_array_equal(learned_rewards[~after], np.sign(rewards[~after]))  # CleanRL's ClipRewardEnv
    assert episodes == raw.game_scores() and max(episodes) > 10  # raw scores of whole games


@pytest.mark.slow
def test_episodic_return_is_the_raw_score_of_whole_games(in_tmp, recorder):
    ppo.main(["--env-id", "ALE/SpaceInvaders-v5", *TINY, "--num-steps", "256", "--total-timesteps", "3072"])
    (run_dir,) = (in_tmp / "runs").iterdir()
    logged = [value for _, value in read_scalars(run_dir)["charts/episodic_return"]]
    games = max(recorder, key=lambda r: len(r.rewards)).game_scores()  # the training envs' (not the probe's)
    assert len(games) >= 2 and logged == pytest.approx(games)
    assert max(logged) > 10  # not clipped, not one life's


def test_image_defaults_are_cleanrls_ppo_atari():
    args = ppo.parse_args(["--env-id", "ALE/Breakout-v5"])
    assert args == ppo.Args(env_id="ALE/Breakout-v5", **ppo.IMAGE_DEFAULTS)
    assert (args.num_envs, args.num_steps, args.num_minibatches, args.update_epochs, args.clip_coef,
            args.learning_rate, args.anneal_lr, args.ent_coef, args.total_timesteps) == \
        (8, 128, 4, 4, 0.1, 2.5e-4, True, 0.01, 10_000_000)
    assert ppo.parse_args(["--env-id", "ALE/Breakout-v5", "--num-envs", "4"]).num_envs == 4  # a flag given wins


def test_the_agent_for_images_is_the_nature_cnn():
    envs = ppo.make_envs(ppo.Args(env_id="ALE/Breakout-v5"), 1)
    agent = ppo.Agent(envs)
    # CleanRL's ppo_atari.py Agent: 8,224 + 32,832 + 36,928 + 1,606,144 (3136 -> 512) + 2,052 + 513 parameters
    assert sum(p.numel() for p in agent.parameters()) == 1_686_693
    assert [m.kernel_size for m in agent.trunk.convolutions if isinstance(m, torch.nn.Conv2d)] == [(8, 8), (4, 4), (3, 3)]
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    _, log_prob, entropy, value = agent.get_action_and_value(obs, torch.tensor([0, 1, 3]))
    assert log_prob.shape == entropy.shape == value.shape == (3,)
    torch.testing.assert_close(entropy, torch.full((3,), np.log(4)), atol=1e-3, rtol=0)  # std 0.01 head: uniform
    torch.testing.assert_close(agent.trunk(obs), agent.trunk(obs.float()))  # bytes are scaled by 1/255 inside
    assert abs(agent.trunk(obs.float()).mean() - agent.trunk.linear(agent.trunk.convolutions(obs / 255.0)).mean()) < 1e-6


def test_channels_last_and_small_images():
    """(84, 84, 4) channels last gives the channels-first network the same numbers; MinAtar's 10x10x4
    gets the small CNN."""
    first = ppo.NatureCNN(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8))
    last = ppo.NatureCNN(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8))
    last.load_state_dict(first.state_dict())
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(last(obs.permute(0, 2, 3, 1)), first(obs))
    minatar = ppo.NatureCNN(gym.spaces.Box(0, 1, (10, 10, 4), bool))
    assert minatar.out_features == 128 and minatar.scale == 1.0
    assert minatar(torch.ones(2, 10, 10, 4)).shape == (2, 128)


def test_a_small_image_env_trains_with_bytes_in_storage(in_tmp, loss_inputs):
    """toy_envs:ImageObs-v0: 8x8x3 bytes, channels last. The rollout stores them as bytes (uint8)."""
    agent = ppo.train(ppo.parse_args(["--env-id", "toy_envs:ImageObs-v0", *TINY, "--total-timesteps", "256"]))
    assert isinstance(agent.trunk, ppo.NatureCNN) and agent.trunk.channels_last
    assert loss_inputs and all(obs.dtype == torch.uint8 and obs.shape[1:] == (8, 8, 3) for obs, _ in loss_inputs)


def test_atari_needs_its_extra_in_one_line(monkeypatch):
    monkeypatch.setattr(ppo, "ale_py", None)
    with pytest.raises(ppo.ConfigError, match=r"^ALE/Breakout-v5 is an Atari game: pip install -r requirements-atari.txt$"):
        ppo.probe_env("ALE/Breakout-v5")
    with pytest.raises(ppo.ConfigError, match="is an Atari game"):
        ppo.probe_env("PongNoFrameskip-v4")
    monkeypatch.undo()
    with pytest.raises(ppo.ConfigError, match="skips a random number of frames"):
        ppo.probe_env("Breakout-v4")


def test_minatar_trains_on_the_small_cnn_and_logs_its_scores(in_tmp):
    pytest.importorskip("minatar", reason="pip install -r requirements-minatar.txt")
    agent = ppo.train(ppo.parse_args(["--env-id", "MinAtar/Breakout-v1", *TINY, "--total-timesteps", "512"]))
    assert agent.trunk.out_features == 128 and agent.trunk.channels_last and agent.actor.out_features == 3
    returns = [value for _, value in read_scalars(next((in_tmp / "runs").iterdir()))["charts/episodic_return"]]
    assert returns and all(value == int(value) >= 0 for value in returns)  # a point a brick, not clipped
    args = ppo.parse_args(["--env-id", "MinAtar/Breakout-v1"])  # an image env: ppo_atari.py's defaults
    assert (args.num_envs, args.clip_coef, args.total_timesteps) == (8, 0.1, 10_000_000)


@pytest.mark.parametrize("env_id, minibatch_size", [("MinAtar/Breakout-v1", 64), ("MinAtar/SpaceInvaders-v1", 256)])
def test_minatar_presets_are_gymnax_settings_with_smaller_minibatches(in_tmp, env_id, minibatch_size):
    """gymnax-blines' PPO for MinAtar (64 envs x 128 steps, 4 epochs, lr 5e-4, clip 0.2, gamma 0.999, lambda
    0.95, entropy 0.01, value 0.5, 10M steps), but the lr annealed (gymnax: constant) and minibatches of 64 or
    256, not 1,024 (docs/atari.md)."""
    pytest.importorskip("minatar", reason="pip install -r requirements-minatar.txt")
    args = ppo.parse_args(["--env-id", env_id, "--preset", "tuned"])
    assert (args.num_envs, args.num_steps, args.update_epochs, args.learning_rate, args.anneal_lr, args.clip_coef,
            args.gamma, args.gae_lambda, args.ent_coef, args.vf_coef, args.total_timesteps) == (
        64, 128, 4, 5e-4, True, 0.2, 0.999, 0.95, 0.01, 0.5, 10_000_000)
    assert 64 * 128 // args.num_minibatches == minibatch_size
    ppo.train(ppo.parse_args(["--env-id", env_id, "--preset", "tuned", "--total-timesteps", str(64 * 128)]))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((in_tmp / "runs").iterdir())))
    events.Reload()
    table = events.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|preset|tuned|" in table and f"|num_minibatches|{args.num_minibatches}|" in table and "|num_envs|64|" in table


def test_minatar_needs_its_extra_in_one_line(monkeypatch):
    for env_id in [env_id for env_id in gym.registry if env_id.startswith("MinAtar/")]:
        monkeypatch.delitem(gym.registry, env_id)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "minatar" else find_spec(name, *rest))
    with pytest.raises(ppo.ConfigError, match=r"^MinAtar/Breakout-v1 is a MinAtar game: pip install -r requirements-minatar.txt$"):
        ppo.probe_env("MinAtar/Breakout-v1")


@pytest.mark.slow
def test_checkpoint_resume_and_evaluation_of_whole_games(in_tmp):
    flags = ["--env-id", "ALE/Breakout-v5", *TINY, "--total-timesteps", "256", "--save-model"]
    ppo.train(ppo.parse_args(flags))
    (run_dir,) = (in_tmp / "runs").iterdir()
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 2
    checkpoint["args"]["total_timesteps"] = 384  # as if stopped after 2 of 3 iterations
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    ppo.train(ppo.parse_args(["--resume", str(run_dir), "--eval-episodes", "1"]))
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 3
    scalars = read_scalars(run_dir)
    assert [step for step, _ in scalars["charts/learning_rate"]] == [128, 256, 384]
    (evaluated,) = [value for _, value in scalars["eval/episodic_return"]]  # one whole game
    assert evaluated >= 0
    assert ppo.main(["--env-id", "ALE/Breakout-v5", "--eval-only", "--eval-episodes", "1", "--no-cuda",
                     "--model-path", str(run_dir / "ppo.cleanrl_model")]) == 0


@pytest.mark.slow
def test_ctrl_c_during_atari_training_checkpoints(in_tmp, monkeypatch):
    from test_edge_cases import signal_once_in

    calls = []
    real_loss = ppo.ppo_loss
    monkeypatch.setattr(ppo, "ppo_loss", lambda *a: calls.append(1) or real_loss(*a))
    signal_once_in(monkeypatch, ppo, "ppo_loss", signal.SIGINT, when=lambda: len(calls) == 3)
    code = ppo.main(["--env-id", "ALE/Breakout-v5", *TINY, "--total-timesteps", "640"])
    assert code == 130
    (run_dir,) = (in_tmp / "runs").iterdir()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 2


@pytest.mark.slow
def test_capture_video_films_the_game_as_a_person_sees_it(in_tmp):
    pytest.importorskip("moviepy")
    pytest.importorskip("cv2")
    assert ppo.main(["--env-id", "ALE/Breakout-v5", *TINY, "--total-timesteps", "1024", "--capture-video"]) == 0
    videos = list((in_tmp / "videos").rglob("*.mp4"))
    assert videos, "no video"
    from moviepy import VideoFileClip

    with VideoFileClip(str(videos[0])) as clip:
        assert tuple(clip.size) == (160, 210)  # the full colour screen, not the agent's 84x84 grayscale


class ScriptedLives(gym.vector.VectorEnv):
    """One env paying 5 a step, that loses a life at steps 2 and 5 and is over at step 7 (NEXT_STEP)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self):
        self.num_envs = 1
        self.single_observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        self.single_action_space = gym.spaces.Discrete(4)
        self.observation_space, self.action_space = self.single_observation_space, gym.spaces.MultiDiscrete([4])
        self.received = []

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros((1, 4, 84, 84), np.uint8), {"lives": np.array([3])}

    def step(self, actions):
        self.received.append(int(actions[0]))
        self.t += 1
        lives = 3 - (self.t >= 2) - (self.t >= 5) - (self.t >= 7)
        return (np.zeros((1, 4, 84, 84), np.uint8), np.array([5.0]), np.array([self.t == 7]), np.array([False]),
                {"lives": np.array([lives])})


def test_end_of_life_on_a_scripted_game():
    env = ScriptedLives()
    envs = ppo.EndOfLifeAsTermination(env, restart_action=1)
    envs.reset()
    steps = [envs.step(np.array([3]))[1:3] for _ in range(7)]
    rewards = [float(r[0]) for r, _ in steps]
    terminated = [bool(t[0]) for _, t in steps]
    assert terminated == [False, True, False, False, True, False, True]  # lives lost at 2 and 5, game over at 7
    assert rewards == [5, 5, 0, 5, 5, 0, 5]  # the step after a lost life pays nothing ...
    assert env.received == [3, 3, 1, 3, 3, 1, 3]  # ... and presses FIRE, not the agent's 3
