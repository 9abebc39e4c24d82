"""Edits a learner makes to ppo.py keep training: each test edits the source as a person would, then trains.

The edits are string replacements on ppo.py itself, so a test fails if the line it edits has gone:
then the edit (and docs/tutorial.md, which describes it) must be updated together.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, read_scalars

SOURCE = (ROOT / "ppo.py").read_text()
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()
# 6 iterations of 4 envs x 32 steps, each 2 epochs of 2 minibatches: 24 optimizer steps
FLAGS = dict(num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2, total_timesteps=6 * 128,
             learning_rate=1e-2, seed=1)


def edited_ppo(tmp_path, *replacements, count=1):
    """ppo.py with each (old, new) replacement made, imported as a module of its own."""
    source = SOURCE
    for old, new in replacements:
        assert source.count(old) == count, f"the edit no longer applies to ppo.py: {old!r}"
        source = source.replace(old, new)
    path = tmp_path / "ppo.py"
    path.write_text(source)
    name = f"ppo_edited_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def train_edited(module, **flags):
    """Train the edited module; returns (initial, final) parameters by name, and the run's scalars.
    train() seeds torch, makes the envs, sets its threads (an orthogonal init depends on their number)
    and makes the Agent: the same steps give its initial weights."""
    args = module.Args(**{**FLAGS, **flags})
    torch.manual_seed(args.seed)
    envs = module.make_envs(args, args.num_envs)
    torch.set_num_threads(module.torch_threads(args, envs.single_observation_space))
    agent = module.Agent(envs, args.hidden_size, args.activation, args.ortho_init, args.log_std_init, args.recurrent,
                         args.recurrent_size)
    initial = {name: p.detach().clone() for name, p in agent.named_parameters()}
    agent = module.train(args)
    final = dict(agent.named_parameters())
    run_dir = max((Path.cwd() / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return initial, final, read_scalars(run_dir)


def assert_trained(initial, final, untouched=()):
    assert set(initial) == set(final)
    for name in final:
        assert torch.isfinite(final[name]).all(), name
        assert torch.equal(final[name], initial[name]) == (name in untouched), name


ACTOR_END = "            layer_init(nn.Linear(hidden_size, n_outputs), std=0.01),\n        )\n"  # the actor's end


def test_an_unused_layer(in_tmp):
    ppo = edited_ppo(in_tmp, (ACTOR_END, ACTOR_END + "        self.spare = nn.Linear(64, 64)  # for a later experiment\n"))
    initial, final, scalars = train_edited(ppo)
    assert_trained(initial, final, untouched={"spare.weight", "spare.bias"})
    assert len(scalars["losses/approx_kl"]) == 6


# the edits hold on any space (issue #32): a Dict of an image, a Tuple and more; MultiDiscrete actions with a mask
SPACES = ["CartPole-v1", "toy_envs:NestedObs-v0", "toy_envs:MaskedDict-v0"]


@pytest.mark.parametrize("env_id", SPACES)
def test_a_frozen_layer(in_tmp, env_id):
    ppo = edited_ppo(in_tmp, (ACTOR_END, ACTOR_END + "        self.actor[0].requires_grad_(False)  # keep the features fixed\n"))
    initial, final, _ = train_edited(ppo, env_id=env_id)
    assert_trained(initial, final, untouched={"actor.0.weight", "actor.0.bias"})


NETWORKS = """        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_size, hidden_size)),
            Activation(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            Activation(),
            layer_init(nn.Linear(hidden_size, 1), std=1.0),
        )
        # A small last layer (std 0.01) makes the first policy nearly uniform (or centred on 0).
        self.actor = nn.Sequential(  # (CleanRL's continuous script: actor_mean)
            layer_init(nn.Linear(obs_size, hidden_size)),
            Activation(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            Activation(),
            layer_init(nn.Linear(hidden_size, n_outputs), std=0.01),
        )
"""


@pytest.mark.parametrize("env_id", SPACES)
def test_a_trunk_shared_by_actor_and_critic(in_tmp, env_id):
    shared = """        trunk = nn.Sequential(layer_init(nn.Linear(obs_size, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh())
        self.critic = nn.Sequential(trunk, layer_init(nn.Linear(64, 1), std=1.0))
        self.actor = nn.Sequential(trunk, layer_init(nn.Linear(64, n_outputs), std=0.01))
"""
    ppo = edited_ppo(in_tmp, (NETWORKS, shared))
    initial, final, _ = train_edited(ppo, env_id=env_id)
    # named_parameters lists a shared parameter once, under its first name (the critic's)
    assert {name for name in final if name.startswith("critic.0.")} == {"critic.0.0.weight", "critic.0.0.bias",
                                                                          "critic.0.2.weight", "critic.0.2.bias"}
    assert not any(name.startswith("actor.0.") for name in final)
    assert_trained(initial, final)


WIDER_CRITIC = NETWORKS.replace("""            layer_init(nn.Linear(obs_size, hidden_size)),
            Activation(),
            layer_init(nn.Linear(hidden_size, hidden_size)),
            Activation(),
            layer_init(nn.Linear(hidden_size, 1), std=1.0),""", """            layer_init(nn.Linear(obs_size, 256)),
            Activation(),
            layer_init(nn.Linear(256, 256)),
            Activation(),
            layer_init(nn.Linear(256, 1), std=1.0),""")


def test_a_wider_critic(in_tmp):
    assert WIDER_CRITIC != NETWORKS
    ppo = edited_ppo(in_tmp, (NETWORKS, WIDER_CRITIC))
    initial, final, _ = train_edited(ppo)
    assert final["critic.2.weight"].shape == (256, 256)
    assert_trained(initial, final)


def test_another_activation(in_tmp):
    ppo = edited_ppo(in_tmp, ("Activation(),", "nn.ELU(),"), count=4)  # (tanh and ReLU: --activation)
    initial, final, _ = train_edited(ppo)
    assert isinstance(ppo.Agent(ppo.make_envs(ppo.Args(), 1)).actor[1], torch.nn.ELU)
    assert_trained(initial, final)


# The tutorial's recipe for another optimizer (section 6): these two edits, word for word.
OPTIMIZER_LINE = ("    optimizer = ClippedAdam(agent.parameters(), lr=args.learning_rate, eps=1e-5, "
                  "max_grad_norm=args.max_grad_norm)\n")
STEP_LINE = "                    optimizer.step()  # = nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm); step()\n"
SWAPPED_OPTIMIZER_LINE = "    optimizer = torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, eps=1e-5)\n"
CLIP_AND_STEP = ("                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)\n"
                 "                    optimizer.step()\n")


def test_another_optimizer_swapped_in_as_the_tutorial_says(in_tmp):
    for line in (OPTIMIZER_LINE + STEP_LINE + SWAPPED_OPTIMIZER_LINE + CLIP_AND_STEP).splitlines():
        assert line.strip() in TUTORIAL, line  # the tutorial shows the same edit
    ppo = edited_ppo(in_tmp, (OPTIMIZER_LINE, SWAPPED_OPTIMIZER_LINE), (STEP_LINE, CLIP_AND_STEP))
    initial, final, scalars = train_edited(ppo, checkpoint_every=2)
    assert_trained(initial, final)
    # the learning rate is annealed through param_groups, and logged from there
    lrs = [value for _, value in scalars["charts/learning_rate"]]
    np.testing.assert_allclose(lrs, [1e-2 * (1 - i / 6) for i in range(6)], rtol=1e-5)

    # A checkpoint holds torch.optim's state, and a resumed run goes on from it.
    run_dir = next((in_tmp / "runs").iterdir())
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert "square_avg" in checkpoint["optimizer"]["state"][0]  # RMSprop's own state
    checkpoint["args"]["total_timesteps"] = 8 * 128  # as if the run had been stopped two iterations early
    torch.save(checkpoint, run_dir / "checkpoint.pt")
    agent = ppo.train(ppo.parse_args(["--resume", str(run_dir)]))
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert resumed["iteration"] == 8
    assert not torch.equal(resumed["optimizer"]["state"][0]["square_avg"], checkpoint["optimizer"]["state"][0]["square_avg"])
    assert all(torch.isfinite(p).all() for p in agent.parameters())


def test_resuming_with_an_edited_agent_is_refused_in_one_line(in_tmp):
    """A checkpoint of the original agent does not fit a wider critic: one line, before anything is written."""
    import ppo as original

    original.train(original.Args(**{**FLAGS, "total_timesteps": 128, "checkpoint_every": 1}))
    (run_dir,) = list((in_tmp / "runs").iterdir())
    before = {p.name: p.stat().st_mtime for p in run_dir.iterdir()}
    edited = edited_ppo(in_tmp, (NETWORKS, WIDER_CRITIC))
    with pytest.raises(edited.ConfigError, match="does not fit this agent or optimizer") as error:
        edited.train(edited.parse_args(["--resume", str(run_dir)]))
    assert "\n" not in str(error.value)
    assert {p.name: p.stat().st_mtime for p in run_dir.iterdir()} == before


def test_a_flag_added_to_args_is_on_the_command_line_and_in_help(in_tmp, capsys):
    """A researcher adds a field to Args, as in CleanRL, and reads it as args.my_flag: the flag exists
    without naming it in FLAG_GROUPS (it shows in --help's last group)."""
    last_field = '    """Box actions: the initial log std of the Gaussian policy (-2: std 0.14, rl-zoo\'s MuJoCo setting)"""\n'
    edited = edited_ppo(in_tmp, (last_field, last_field + '    my_flag: int = 3\n    """a flag of my own"""\n'
                                              '    no_docstring: bool = False\n'))
    assert edited.parse_args(["--my-flag", "5"]).my_flag == 5
    assert edited.parse_args([]).my_flag == 3 and edited.parse_args(["--no-docstring"]).no_docstring
    with pytest.raises(SystemExit):
        edited.parse_args(["--help"])
    assert "--my-flag INT" in capsys.readouterr().out


def test_a_field_renamed_in_args_alone_is_one_line(in_tmp):
    edited = edited_ppo(in_tmp, ("    ent_coef: float = 0.01\n", "    entropy_coef: float = 0.01\n"))
    with pytest.raises(edited.ConfigError, match=r"^FLAG_GROUPS names ent_coef, which Args has not: edit FLAG_GROUPS$"):
        edited.parse_args([])


# the edits hold with a memory (issue #33): the recurrent layer frozen, or a shared trunk above it
RECURRENT_NAMES = {f"recurrent.rnn.{kind}_{part}_l0" for kind in ("weight", "bias") for part in ("ih", "hh")}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_frozen_recurrent_layer(in_tmp, kind):
    ppo = edited_ppo(in_tmp, (ACTOR_END, ACTOR_END + "        self.recurrent.requires_grad_(False)  # a fixed random memory\n"))
    initial, final, _ = train_edited(ppo, env_id="toy_envs:RememberCue-v0", recurrent=kind)
    assert_trained(initial, final, untouched=RECURRENT_NAMES)


def test_a_shared_trunk_above_a_memory(in_tmp):
    shared = """        trunk = nn.Sequential(layer_init(nn.Linear(obs_size, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)), nn.Tanh())
        self.critic = nn.Sequential(trunk, layer_init(nn.Linear(64, 1), std=1.0))
        self.actor = nn.Sequential(trunk, layer_init(nn.Linear(64, n_outputs), std=0.01))
"""
    ppo = edited_ppo(in_tmp, (NETWORKS, shared))
    initial, final, _ = train_edited(ppo, env_id="toy_envs:NestedObs-v0", recurrent="lstm")
    assert RECURRENT_NAMES <= set(final) and not any(name.startswith("actor.0.") for name in final)
    assert_trained(initial, final)
