"""The advantage estimators against hand-computed and formula-derived values."""

import pytest
import torch

from ppo import compute_gae, compute_mc_returns


def three_steps(terminated_or_truncated):
    """Two envs, 3 steps, rewards 1: env 0 terminates at step 1, env 1 is truncated at step 1."""
    rewards = torch.ones(3, 2)
    values = torch.tensor([[0.5, 0.5], [0.4, 0.4], [0.3, 0.3]])
    next_value = torch.tensor([0.2, 0.2])
    terminations = torch.tensor([[False, False], [True, False], [False, False]])
    truncations = torch.tensor([[False, False], [False, True], [False, False]])
    return rewards, values, next_value, terminations, truncations


def test_gae_hand_computed():
    # gamma 0.9, lambda 0.8, so gamma * lambda = 0.72.
    # delta_2 = 1 + 0.9 * 0.2 - 0.3 = 0.88 (both envs: bootstrapped with next_value)
    # env 0, terminated at step 1: delta_1 = 1 + 0 - 0.4 = 0.6, and A_1 does not see A_2
    #   A = [0.86 + 0.72 * 0.6, 0.6, 0.88] = [1.292, 0.6, 0.88], where delta_0 = 1 + 0.9 * 0.4 - 0.5
    # env 1, truncated at step 1: bootstrapped with V(final obs) = values[2] = 0.3
    #   delta_1 = 1 + 0.9 * 0.3 - 0.4 = 0.87, A = [0.86 + 0.72 * 0.87, 0.87, 0.88]
    advantages = compute_gae(*three_steps(None), gamma=0.9, gae_lambda=0.8)
    expected = torch.tensor([[1.292, 1.4864], [0.6, 0.87], [0.88, 0.88]])
    torch.testing.assert_close(advantages, expected)


def test_mc_returns_hand_computed():
    # env 0: G_2 = 1 + 0.9 * 0.2 = 1.18; G_1 = 1 (terminated); G_0 = 1 + 0.9 * 1 = 1.9
    # env 1: G_2 = 1.18; G_1 = 1 + 0.9 * 0.3 = 1.27 (truncated: V(final obs)); G_0 = 1 + 0.9 * 1.27
    returns = compute_mc_returns(*three_steps(None), gamma=0.9)
    expected = torch.tensor([[1.9, 2.143], [1.0, 1.27], [1.18, 1.18]])
    torch.testing.assert_close(returns, expected)


def random_rollout(seed, num_steps=40, num_envs=5):
    """Episodes end at random; some by termination, some by truncation, some by both at once."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(num_steps, num_envs, generator=g)
    values = torch.randn(num_steps, num_envs, generator=g)
    next_value = torch.randn(num_envs, generator=g)
    ends = torch.rand(num_steps, num_envs, generator=g) < 0.2
    kind = torch.randint(0, 3, (num_steps, num_envs), generator=g)  # 0: terminated, 1: truncated, 2: both
    return rewards, values, next_value, ends & (kind != 1), ends & (kind != 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_one_is_monte_carlo(seed):
    rollout = random_rollout(seed)
    advantages = compute_gae(*rollout, gamma=0.97, gae_lambda=1.0)
    returns = compute_mc_returns(*rollout, gamma=0.97)
    torch.testing.assert_close(advantages + rollout[1], returns, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_zero_is_td_error(seed):
    rewards, values, next_value, terminations, truncations = random_rollout(seed)
    advantages = compute_gae(rewards, values, next_value, terminations, truncations, gamma=0.97, gae_lambda=0.0)
    next_values = torch.cat([values[1:], next_value[None]])
    td_error = rewards + 0.97 * (~terminations) * next_values - values
    torch.testing.assert_close(advantages, td_error)


def test_terminated_and_truncated_at_once_is_a_termination():
    rewards, values, next_value, terminations, truncations = three_steps(None)
    both = terminations | truncations  # both envs now end at step 1 by both flags at once
    advantages = compute_gae(rewards, values, next_value, both, both, gamma=0.9, gae_lambda=0.8)
    returns = compute_mc_returns(rewards, values, next_value, both, both, gamma=0.9)
    # as env 0 of the hand-computed examples: no bootstrap after step 1
    torch.testing.assert_close(advantages, torch.tensor([[1.292, 1.292], [0.6, 0.6], [0.88, 0.88]]))
    torch.testing.assert_close(returns, torch.tensor([[1.9, 1.9], [1.0, 1.0], [1.18, 1.18]]))


def test_monte_carlo_is_discounted_sum_without_done():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    no_done = torch.zeros(3, 1, dtype=torch.bool)
    returns = compute_mc_returns(rewards, torch.zeros(3, 1), torch.tensor([10.0]), no_done, no_done, gamma=0.5)
    # G_0 = 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10
    torch.testing.assert_close(returns[:, 0], torch.tensor([4.0, 6.0, 8.0]))


@pytest.mark.parametrize("estimator", ["gae", "mc"])
@pytest.mark.parametrize("kind", ["terminated", "truncated"])
def test_nothing_crosses_an_episode_boundary(estimator, kind):
    """What happens after an episode ends at step k must not change any estimate up to step k.

    Only values[k + 1], V(final observation), may matter, and only for a truncation.
    """
    num_steps, k = 10, 4
    rewards, values, next_value, _, _ = random_rollout(7, num_steps=num_steps, num_envs=3)
    ended = torch.zeros(num_steps, 3, dtype=torch.bool)
    ended[k] = True
    no_end = torch.zeros_like(ended)
    terminations, truncations = (ended, no_end) if kind == "terminated" else (no_end, ended)

    def estimate(rewards, values, next_value):
        if estimator == "gae":
            return compute_gae(rewards, values, next_value, terminations, truncations, 0.99, 0.95)
        return compute_mc_returns(rewards, values, next_value, terminations, truncations, 0.99)

    before = estimate(rewards, values, next_value)
    later_rewards, later_values = rewards.clone(), values.clone()
    later_rewards[k + 1:] += 100.0
    later_values[k + 2:] -= 100.0
    after = estimate(later_rewards, later_values, next_value + 100.0)
    torch.testing.assert_close(after[: k + 1], before[: k + 1])
    assert not torch.allclose(after[k + 1:], before[k + 1:])

    final_value_changed = values.clone()
    final_value_changed[k + 1] += 1.0
    changed = estimate(rewards, final_value_changed, next_value)
    if kind == "terminated":  # no bootstrap after a termination
        torch.testing.assert_close(changed[k], before[k])
    else:  # a truncation bootstraps with gamma * V(final observation)
        torch.testing.assert_close(changed[k], before[k] + 0.99)
