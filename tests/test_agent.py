"""The agent's network, its sampling and the PPO loss, against torch.distributions and the formulas."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo import Agent, Args, ClippedAdam, TrainingError, ppo_loss


@pytest.fixture
def agent():
    torch.manual_seed(0)
    envs = gym.make_vec("Acrobot-v1", num_envs=2, vectorization_mode="sync")  # 6-dim obs, 3 actions
    return Agent(envs)


def test_architecture_and_init(agent):
    for net, head_std, outputs in [(agent.actor, 0.01, 3), (agent.critic, 1.0, 1)]:
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(6, 64), (64, 64), (64, outputs)]
        assert sum(isinstance(m, torch.nn.Tanh) for m in net) == 2
        for layer, gain in zip(linears, [math.sqrt(2), math.sqrt(2), head_std]):
            assert torch.all(layer.bias == 0)
            w = layer.weight
            # orthogonal init: the rows (or columns) of W / gain are orthonormal
            gram = (w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w) / gain**2
            torch.testing.assert_close(gram, torch.eye(gram.shape[0]), atol=1e-5, rtol=1e-5)


def test_log_prob_and_entropy_match_categorical(agent):
    x = torch.randn(32, 6)
    actions = torch.randint(0, 3, (32,))
    action, log_prob, entropy, value = agent.get_action_and_value(x, actions)
    dist = torch.distributions.Categorical(logits=agent.actor(x))
    assert torch.equal(action, actions)
    torch.testing.assert_close(log_prob, dist.log_prob(actions))
    torch.testing.assert_close(entropy, dist.entropy())
    torch.testing.assert_close(value, agent.critic(x).squeeze(-1))
    torch.testing.assert_close(agent.get_value(x), value)
    assert log_prob.shape == entropy.shape == value.shape == (32,)


def test_sampling_follows_the_policy():
    """The Gumbel-max sampler draws actions with the policy's probabilities."""
    torch.manual_seed(0)
    envs = gym.make_vec("Acrobot-v1", num_envs=1, vectorization_mode="sync")
    agent = Agent(envs)
    with torch.no_grad():  # a policy far from uniform: p = softmax([0, 1, 2])
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    n = 40_000
    action, log_prob, _, _ = agent.get_action_and_value(torch.zeros(n, 6))
    frequencies = torch.bincount(action, minlength=3) / n
    probs = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    # binomial standard error is at most 0.0025 here: 4 sigma
    torch.testing.assert_close(frequencies, probs, atol=0.01, rtol=0)
    torch.testing.assert_close(log_prob, probs.log()[action])


def test_ppo_loss_matches_the_formulas(agent):
    args = Args(clip_coef=0.2, ent_coef=0.01, vf_coef=0.5, norm_adv=True, clip_vloss=True)
    torch.manual_seed(1)
    obs = torch.randn(64, 6)
    actions = torch.randint(0, 3, (64,))
    with torch.no_grad():
        _, new_log_prob, entropy, new_value = agent.get_action_and_value(obs, actions)
    old_log_probs = new_log_prob + 0.3 * torch.randn(64)  # ratios spread around 1, some clipped
    old_values = new_value + 0.5 * torch.randn(64)
    advantages, returns = torch.randn(64) * 3 + 1, torch.randn(64)

    loss, stats = ppo_loss(agent, obs, actions, old_log_probs, old_values, advantages, returns, args)

    ratio = np.exp((new_log_prob - old_log_probs).numpy())
    adv = advantages.numpy()
    adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    policy_loss = np.mean(np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.8, 1.2)))
    v, v_old, ret = new_value.numpy(), old_values.numpy(), returns.numpy()
    v_clipped = v_old + np.clip(v - v_old, -0.2, 0.2)
    value_loss = 0.5 * np.mean(np.maximum((v - ret) ** 2, (v_clipped - ret) ** 2))
    ent = entropy.numpy().mean()
    log_ratio = np.log(ratio)
    assert stats["policy_loss"].item() == pytest.approx(policy_loss, rel=1e-5)
    assert stats["value_loss"].item() == pytest.approx(value_loss, rel=1e-5)
    assert stats["entropy"].item() == pytest.approx(ent, rel=1e-5)
    assert loss.item() == pytest.approx(policy_loss - 0.01 * ent + 0.5 * value_loss, rel=1e-5)
    assert stats["approx_kl"].item() == pytest.approx(np.mean(ratio - 1 - log_ratio), rel=1e-4)
    assert stats["old_approx_kl"].item() == pytest.approx(np.mean(-log_ratio), rel=1e-4, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(np.mean(np.abs(ratio - 1) > 0.2))
    assert 0 < stats["clipfrac"].item() < 1

    # Without value clipping the value loss is the plain squared error.
    _, stats = ppo_loss(agent, obs, actions, old_log_probs, old_values, advantages, returns,
                        Args(clip_vloss=False, ent_coef=0.0))
    assert stats["value_loss"].item() == pytest.approx(0.5 * np.mean((v - ret) ** 2), rel=1e-5)


def train_side_by_side(ours, reference, optimizer, reference_optimizer, max_grad_norm, steps=20):
    """The same losses on two copies of an agent: ours with ClippedAdam, the other with torch.optim.Adam
    after nn.utils.clip_grad_norm_, the learning rate annealed on both as train() does."""
    obs = torch.randn(64, 6)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = reference_optimizer.param_groups[0]["lr"] = 1e-2 * (1 - step / steps)
        for agent, opt in ((ours, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            _, log_prob, entropy, value = agent.get_action_and_value(obs, torch.arange(64) % 3)
            (log_prob.mean() * 10 + entropy.mean() + (value ** 2).mean()).backward()
        optimizer.step()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_grad_norm)
        assert (norm > max_grad_norm) == (max_grad_norm == 0.5)  # the clip really acts (or not)
        reference_optimizer.step()


def twin_agents():
    envs = gym.make_vec("Acrobot-v1", num_envs=2, vectorization_mode="sync")
    torch.manual_seed(0)
    ours, reference = Agent(envs), Agent(envs)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


@pytest.mark.parametrize("max_grad_norm", [0.5, 1e6])  # clipped, and never clipped
def test_clipped_adam_matches_torch_adam_with_clipping(max_grad_norm):
    """ClippedAdam takes the steps of torch.optim.Adam after nn.utils.clip_grad_norm_."""
    ours, reference = twin_agents()
    optimizer = ClippedAdam(ours.parameters(), lr=1e-2, eps=1e-5, max_grad_norm=max_grad_norm)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-5)
    initial = {name: p.clone() for name, p in ours.named_parameters()}
    train_side_by_side(ours, reference, optimizer, reference_optimizer, max_grad_norm)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        assert not torch.equal(p, initial[name])  # it trained
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    optimizer.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


@pytest.mark.parametrize("edit", ["frozen layer", "unused layer", "shared layer listed twice", "moved before step"])
def test_clipped_adam_handles_what_torch_adam_handles(edit):
    """Parameters without a gradient are skipped, a parameter listed twice counts once, and the model
    may move before the first step: the same steps as torch.optim.Adam, edit for edit."""
    ours, reference = twin_agents()
    params, reference_params = list(ours.parameters()), list(reference.parameters())
    if edit == "frozen layer":
        ours.actor[0].requires_grad_(False)
        reference.actor[0].requires_grad_(False)
    elif edit == "unused layer":
        for agent in (ours, reference):
            agent.spare = torch.nn.Linear(6, 6)  # not used in the forward pass: its gradient stays None
        reference.spare.load_state_dict(ours.spare.state_dict())
        params, reference_params = list(ours.parameters()), list(reference.parameters())
    elif edit == "shared layer listed twice":
        params = params + list(ours.critic[0].parameters())
    optimizer = ClippedAdam(params, lr=1e-2, eps=1e-5, max_grad_norm=0.5)
    reference_optimizer = torch.optim.Adam(reference_params, lr=1e-2, eps=1e-5)
    if edit == "moved before step":
        ours.double()
        reference.double()
    initial = {name: p.clone() for name, p in ours.named_parameters()}
    if edit == "moved before step":
        train_side_by_side_double(ours, reference, optimizer, reference_optimizer)
    else:
        train_side_by_side(ours, reference, optimizer, reference_optimizer, 0.5)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        untouched = name.startswith("spare") or (edit == "frozen layer" and name.startswith("actor.0"))
        assert torch.equal(p, initial[name]) == untouched, name


def train_side_by_side_double(ours, reference, optimizer, reference_optimizer):
    obs = torch.randn(64, 6, dtype=torch.float64)
    for _ in range(5):
        for agent, opt in ((ours, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            _, log_prob, _, value = agent.get_action_and_value(obs, torch.arange(64) % 3)
            (log_prob.mean() + (value ** 2).mean()).backward()
        optimizer.step()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        reference_optimizer.step()


def test_clipped_adam_refuses_what_it_cannot_follow():
    """A model moved, or a layer frozen, after the first step: a clear error, not silent divergence."""
    for edit in ["moved after the first step", "frozen after the first step", "replaced after the first step"]:
        obs = torch.randn(8, 6)
        agent, _ = twin_agents()
        optimizer = ClippedAdam(agent.parameters(), lr=1e-2, eps=1e-5)
        for step in range(2):
            if step == 1 and edit == "moved after the first step":
                agent.double()
                obs = obs.double()
            if step == 1 and edit == "frozen after the first step":
                agent.critic[2].requires_grad_(False)
            if step == 1 and edit == "replaced after the first step":
                agent.load_state_dict(twin_agents()[1].state_dict(), assign=True)
            optimizer.zero_grad()
            agent.get_action_and_value(obs, torch.arange(8) % 3)[3].sum().backward()
            if step == 0:
                optimizer.step()
        message = "were moved or replaced after" if edit.startswith("moved") else "with a gradient changed"
        with pytest.raises(TrainingError, match=message):
            optimizer.step()


def test_clipped_adam_state_dict_round_trip():
    ours, reference = twin_agents()
    optimizer = ClippedAdam(ours.parameters(), lr=1e-2, eps=1e-5, max_grad_norm=0.5)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-5)
    train_side_by_side(ours, reference, optimizer, reference_optimizer, 0.5, steps=5)
    restored = ClippedAdam(ours.parameters(), lr=123.0, eps=1e-5, max_grad_norm=0.5)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.steps_taken == 5 and restored.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    torch.testing.assert_close(restored.exp_avg_sq, optimizer.exp_avg_sq)
    with pytest.raises(ValueError, match="the state is for 12 parameter tensors, this optimizer has 2"):
        ClippedAdam(ours.critic[0].parameters(), lr=1e-2).load_state_dict(optimizer.state_dict())
