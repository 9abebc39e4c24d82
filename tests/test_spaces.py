"""Any gymnasium space (issue #32): MultiDiscrete and MultiBinary actions; Discrete, MultiDiscrete,
MultiBinary, Box-of-any-rank, Dict and Tuple observations; invalid-action masks. The distributions
against torch.distributions, the encodings against hand-made one-hots, the storage's dtypes, masks that
are never broken, and runs on each space that train, resume, evaluate and film."""


import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo
import toy_envs
from conftest import read_scalars, whole_and_resumed

TINY = ["--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "2",
        "--total-timesteps", "64"]


def agent_for(env_id, **flags):
    envs = ppo.make_envs(ppo.parse_args(["--env-id", env_id]), 2)
    agent = ppo.Agent(envs)
    return agent, envs


# ---- the action distributions ----

@pytest.mark.parametrize("nvec", [[3, 2, 4], [5], [2, 2]])
def test_multidiscrete_log_probs_and_entropies_are_a_categorical_per_dimension(nvec):
    torch.manual_seed(0)
    space = gym.spaces.MultiDiscrete(nvec)
    head = ppo.ActionLogits(gym.spaces.Box(-1, 1, (2,)), space)
    assert head.n_outputs == sum(nvec)
    actor_out = torch.randn(64, sum(nvec)) * 3
    logits = head(actor_out, None)  # (batch, dims, most choices)
    slices = torch.split(actor_out, nvec, dim=1)
    actions = torch.stack([torch.distributions.Categorical(logits=s).sample() for s in slices], 1)
    log_probs = torch.log_softmax(logits, -1)
    ours_lp = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1).sum(-1)
    ours_ent = -(log_probs.exp() * log_probs).sum(-1).sum(-1)
    theirs_lp = sum(torch.distributions.Categorical(logits=s).log_prob(a) for s, a in zip(slices, actions.T))
    theirs_ent = sum(torch.distributions.Categorical(logits=s).entropy() for s in slices)
    torch.testing.assert_close(ours_lp, theirs_lp)
    torch.testing.assert_close(ours_ent, theirs_ent)


def test_multibinary_is_a_bernoulli_per_bit():
    torch.manual_seed(0)
    head = ppo.ActionLogits(gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiBinary(3))
    assert head.n_outputs == 3  # one logit per bit, as a Bernoulli's
    actor_out = torch.randn(64, 3) * 3
    bernoulli = torch.distributions.Bernoulli(logits=actor_out)
    bits = bernoulli.sample().long()
    log_probs = torch.log_softmax(head(actor_out, None), -1)
    ours_lp = log_probs.gather(-1, bits.unsqueeze(-1)).squeeze(-1).sum(-1)
    ours_ent = -(log_probs.exp() * log_probs).sum(-1).sum(-1)
    torch.testing.assert_close(ours_lp, bernoulli.log_prob(bits.float()).sum(-1))
    torch.testing.assert_close(ours_ent, bernoulli.entropy().sum(-1))


@pytest.mark.parametrize("env_id, shape", [("toy_envs:MultiDiscreteAction-v0", (3,)),
                                           ("toy_envs:MultiBinaryAction-v0", (3,))])
def test_the_agent_samples_each_dimension_from_its_own_softmax(env_id, shape):
    """Gumbel-max per dimension: the sampled frequencies match the probabilities; padding is never drawn."""
    torch.manual_seed(0)
    agent, envs = agent_for(env_id)
    n = agent.action_logits.n_outputs
    bias = torch.linspace(-1.0, 1.5, n).flip(0) * torch.tensor([1.0, -1.0] * n)[:n]
    with torch.no_grad():
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(bias)  # the actor's outputs: `bias`, whatever it sees
        obs = ppo.as_tensor(envs.reset(seed=0)[0], torch.device("cpu"))[:1].expand(20_000, -1)
        actions = agent.get_action(obs)
    assert actions.shape == (20_000,) + shape
    probs = torch.softmax(agent.action_logits(bias[None], None), -1)[0]  # (dims, most choices)
    for dim in range(shape[0]):
        counts = torch.bincount(actions[:, dim], minlength=probs.shape[1]).float() / len(actions)
        torch.testing.assert_close(counts, probs[dim], atol=0.015, rtol=0)
    envs.step(actions[:2].numpy())  # actions the env takes (AnySpaceEnv checks them), start offsets and all


# ---- masks ----

def test_a_masked_action_is_never_sampled_and_has_probability_zero():
    torch.manual_seed(0)
    agent, envs = agent_for("toy_envs:MaskedDict-v0")  # MultiDiscrete([3, 2]), a mask in the Dict
    obs, _ = envs.reset(seed=0)
    obs, *_ = envs.step(np.zeros((2, 2), np.int64))  # t = 1: the lowest choice of each dimension is masked
    mask = obs["action_mask"]
    assert mask.tolist() == [[0, 1, 1, 0, 1]] * 2
    batch = ppo.as_tensor(ppo.ObservationParts({k: np.repeat(v[:1], 5000, 0) for k, v in obs.items()}),
                          torch.device("cpu"))
    with torch.no_grad():
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.tensor([5.0, 0.0, 0.0, 5.0, 0.0]))  # the masked choices the likeliest
        actions = agent.get_action(batch)
        greedy = agent.get_greedy_action(batch)
        _, log_prob, entropy, _ = agent.get_action_and_value(batch, actions)
        logits = agent.action_logits(agent.actor(agent.trunk(batch)), batch)
    assert (actions[:, 0] != 0).all() and (actions[:, 1] == 1).all()  # never a masked choice
    assert (greedy[:, 0] != 0).all() and (greedy[:, 1] == 1).all()
    probs = torch.softmax(logits, -1)
    assert probs[:, 0, 0].max() == 0 and probs[:, 1, 0].max() == 0  # probability exactly 0
    # the entropy and log-prob of the distribution over the allowed choices alone
    allowed = [torch.distributions.Categorical(logits=torch.zeros(5000, 2)), torch.distributions.Categorical(
        logits=torch.zeros(5000, 1))]
    torch.testing.assert_close(entropy, allowed[0].entropy() + allowed[1].entropy())
    torch.testing.assert_close(log_prob, torch.full((5000,), np.log(0.5)))


@pytest.mark.parametrize("env_id", ["toy_envs:MaskedInfo-v0", "toy_envs:MaskedDict-v0", "toy_envs:MaskedNested-v0"])
def test_training_and_evaluation_never_take_a_masked_action(in_tmp, env_id):
    before = toy_envs.AnySpaceEnv.masked_actions_taken
    assert ppo.main(["--env-id", env_id, *TINY, "--eval-episodes", "3"]) == 0
    assert toy_envs.AnySpaceEnv.masked_actions_taken == before  # not once, in 64 steps and 3 episodes
    assert ppo.main(["--env-id", env_id, *TINY, "--no-mask-actions", "--exp-name", "unmasked"]) == 0
    assert toy_envs.AnySpaceEnv.masked_actions_taken > before  # the env's masks are real ones


def test_a_mask_that_allows_nothing_stops_the_run_naming_the_step(in_tmp, capsys):
    assert ppo.main(["--env-id", "toy_envs:EmptyMask-v0", *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    # the env's 6th step is the 7th of the vector env: a reset step (NEXT_STEP) came between its episodes
    assert err == ["error: step 7: env 0's action mask allows no action"]


# ---- observations ----

def test_one_hot_encodings():
    space = gym.spaces.Dict({"cell": gym.spaces.Discrete(5, start=2), "code": gym.spaces.MultiDiscrete([3, 4], start=[0, -1]),
                             "bits": gym.spaces.MultiBinary(3), "table": gym.spaces.Box(-1, 1, (2, 2))})
    encoder = ppo.ObservationEncoder(space)
    assert encoder.out_features == 5 + 7 + 3 + 4
    x = ppo.ObservationParts({"cell": torch.tensor([2, 6]), "code": torch.tensor([[0, -1], [2, 2]]),
                              "bits": torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.int8),
                              "table": torch.tensor([[[0.5, -0.5], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.25]]])})
    expected = torch.tensor([  # in the Dict's order (gymnasium sorts its keys): bits, cell, code, table
        [1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0.5, -0.5, 1.0, 0.0],
        [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0.0, 0.0, 0.0, 0.25]])
    torch.testing.assert_close(encoder(x), expected)


def test_a_plain_discrete_observation_is_a_one_hot():
    encoder = ppo.ObservationEncoder(gym.spaces.Discrete(4))
    torch.testing.assert_close(encoder(torch.tensor([3, 0])), torch.tensor([[0.0, 0, 0, 1], [1, 0, 0, 0]]))


def test_dict_and_tuple_observations_are_stored_in_their_own_dtypes_and_round_trip():
    envs = ppo.make_envs(ppo.parse_args(["--env-id", "toy_envs:NestedObs-v0"]), 2)
    space = envs.single_observation_space
    assert list(space.spaces) == ["camera", "cell", "inner/bits", "inner/pair/0", "inner/pair/1", "position"]
    storage = ppo.observation_storage(space, (3, 2))
    dtypes = {name: part.dtype for name, part in storage.items()}
    assert dtypes == {"camera": np.uint8, "position": np.float32, "cell": np.int64, "inner/bits": np.int8,
                      "inner/pair/0": np.int64, "inner/pair/1": np.float32}  # float64 as the networks' float32
    assert storage["camera"].shape == (3, 2, 8, 8, 3) and storage["inner/pair/1"].shape == (3, 2, 2, 2)
    obs, _ = envs.reset(seed=0)
    for step in range(3):
        storage[step] = obs
        obs, *_ = envs.step(np.zeros(2, np.int64))
    batch = ppo.as_tensor(storage, torch.device("cpu"), flatten_steps=True)
    assert {name: t.dtype for name, t in batch.items()} == {
        "camera": torch.uint8, "position": torch.float32, "cell": torch.int64, "inner/bits": torch.int8,
        "inner/pair/0": torch.int64, "inner/pair/1": torch.float32}
    assert batch["camera"].shape == (6, 8, 8, 3)
    # step 1 of env 1 is row 3 (steps first, as obs.reshape(-1, ...)): t = 1 everywhere
    assert batch["cell"][3] == 1 and batch["camera"][3].unique().tolist() == [1]
    assert batch["inner/pair/0"][3].tolist() == [1, 1] and batch["inner/pair/1"][3].eq(1).all()
    mb = batch[torch.tensor([3, 0])]  # a minibatch indexes every part alike
    assert mb["cell"].tolist() == [1, 0] and mb["camera"].shape == (2, 8, 8, 3)


@pytest.mark.parametrize("env_id", ["toy_envs:DiscreteObs-v0", "toy_envs:MultiDiscreteObs-v0",
                                    "toy_envs:MultiBinaryObs-v0", "toy_envs:TupleObs-v0", "toy_envs:NestedObs-v0",
                                    "toy_envs:DictObs-v0", "toy_envs:ColumnObs-v0", "toy_envs:ScalarObs-v0",
                                    "toy_envs:MultiDiscreteAction-v0", "toy_envs:MultiDiscreteGridAction-v0",
                                    "toy_envs:MultiBinaryAction-v0", "toy_envs:MultiBinaryGridAction-v0",
                                    "toy_envs:MultiBinary-v0", "FrozenLake-v1", "Taxi-v4", "Blackjack-v1"])
def test_every_space_trains_saves_and_evaluates(in_tmp, env_id):
    assert ppo.main(["--env-id", env_id, *TINY, "--save-model", "--eval-episodes", "2", "--norm-obs"]) == 0
    (run_dir,) = (in_tmp / "runs").iterdir()
    assert len(read_scalars(run_dir)["eval/episodic_return"]) == 2
    (model,) = run_dir.glob("*.cleanrl_model")
    assert ppo.main(["--env-id", env_id, "--eval-only", "--model-path", str(model), "--eval-episodes", "2"]) == 0


def test_norm_obs_normalises_a_dicts_float_vectors_only(in_tmp):
    envs = ppo.make_envs(ppo.parse_args(["--env-id", "toy_envs:NestedObs-v0", "--norm-obs"]), 2)
    normalizer = ppo.find_wrapper(envs, ppo.ClipAndNormalize)
    assert normalizer.vector_parts == ["inner/pair/1", "position"]
    assert normalizer.obs_rms.mean.shape == (3 + 4,)
    obs, _ = envs.reset(seed=0)
    for _ in range(3):
        obs, *_ = envs.step(np.zeros(2, np.int64))
    assert obs["cell"].tolist() == [3, 3] and obs["camera"].max() == 3  # as the env gives them
    assert obs["position"].dtype == np.float32 and abs(obs["position"]).max() < 2  # t = 3 of 0, 1, 2, 3: normalised
    assert envs.single_observation_space["inner/pair/1"].dtype == np.float32


def test_a_resumed_run_on_a_dict_env_ends_bit_identical_to_an_uninterrupted_one(in_tmp, monkeypatch):
    """NestedObs-v0 is deterministic and its episodes last 4 steps + the reset step: each rollout of 5
    steps ends where a fresh reset starts, so a resume (which resets the envs) sees what the run saw."""
    flags = ["--env-id", "toy_envs:NestedObs-v0", "--num-envs", "2", "--num-steps", "5", "--num-minibatches", "2",
             "--update-epochs", "2", "--total-timesteps", "40", "--checkpoint-every", "1"]
    whole, resumed = whole_and_resumed(flags, in_tmp, monkeypatch)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_capture_video_films_a_dict_env(in_tmp):
    pytest.importorskip("moviepy")
    assert ppo.main(["--env-id", "toy_envs:MaskedNested-v0", *TINY, "--capture-video"]) == 0
    assert list((in_tmp / "videos").rglob("*.mp4"))


# ---- refusals: one line, exit 2, nothing written ----

REFUSED = [
    ("toy_envs:TextObs-v0", "whose part 'mission' is a Text, not numbers the agent can take: drop it with a wrapper"),
    ("toy_envs:SequenceObs-v0", "a Sequence, not numbers the agent can take"),
    ("toy_envs:DictAction-v0", "the agent takes Discrete, MultiDiscrete, MultiBinary or Box actions"),
    ("toy_envs:VolumeObs-v0", "of rank 4; the agent takes a vector"),
    ("toy_envs:WrongMask-v0", "the env's action mask has shape (4,); Discrete(3) needs (3,)"),
]


@pytest.mark.parametrize("env_id, message", REFUSED, ids=[e for e, _ in REFUSED])
def test_spaces_the_agent_cannot_take_are_refused_in_one_line(in_tmp, capsys, env_id, message):
    assert ppo.main(["--env-id", env_id]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert list(in_tmp.iterdir()) == []
