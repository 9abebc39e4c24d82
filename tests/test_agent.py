"""The agent's network, its sampling and the PPO loss, against torch.distributions and the formulas."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo import Adam, Agent, Args, ppo_loss


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


@pytest.mark.parametrize("max_grad_norm", [0.5, 1e6])  # clipped, and never clipped
def test_adam_matches_torch_adam_with_clipping(max_grad_norm):
    """Our flat-vector Adam takes the steps of torch.optim.Adam after nn.utils.clip_grad_norm_."""
    envs = gym.make_vec("Acrobot-v1", num_envs=2, vectorization_mode="sync")
    torch.manual_seed(0)
    ours, reference = Agent(envs), Agent(envs)
    reference.load_state_dict(ours.state_dict())
    optimizer = Adam(ours.parameters(), lr=1e-2, eps=1e-5)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-5)
    initial = {name: p.clone() for name, p in ours.named_parameters()}
    obs = torch.randn(64, 6)
    for step in range(20):
        optimizer.lr = reference_optimizer.param_groups[0]["lr"] = 1e-2 * (1 - step / 20)  # annealed
        for agent in (ours, reference):
            _, log_prob, entropy, value = agent.get_action_and_value(obs, torch.arange(64) % 3)
            (log_prob.mean() * 10 + entropy.mean() + (value ** 2).mean()).backward()
        optimizer.step(max_grad_norm)
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_grad_norm)
        assert (norm > max_grad_norm) == (max_grad_norm == 0.5)  # the clip really acts (or not)
        reference_optimizer.step()
        reference_optimizer.zero_grad()
    assert all(p.grad is None for p in ours.parameters())  # step() clears the gradients
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        assert not torch.equal(p, initial[name])  # it trained
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # the module's parameters are views into the one vector Adam updates
    assert optimizer.flat_params.data_ptr() == next(ours.parameters()).data_ptr()
