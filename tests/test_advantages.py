"""The advantage estimators against hand-computed and formula-derived values."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from ppo import compute_gae, compute_mc_returns


def three_steps(terminated_or_truncated):
    """Two envs, 3 steps, rewards 1: env 0 terminates at step 1, env 1 is truncated at step 1."""
    rewards = np.ones((3, 2), dtype=np.float32)
    values = np.array([[0.5, 0.5], [0.4, 0.4], [0.3, 0.3]], dtype=np.float32)
    next_value = np.array([0.2, 0.2], dtype=np.float32)
    terminations = np.array([[False, False], [True, False], [False, False]])
    truncations = np.array([[False, False], [False, True], [False, False]])
    return rewards, values, next_value, terminations, truncations


def test_gae_hand_computed():
    # gamma 0.9, lambda 0.8, so gamma * lambda = 0.72.
    # delta_2 = 1 + 0.9 * 0.2 - 0.3 = 0.88 (both envs: bootstrapped with next_value)
    # env 0, terminated at step 1: delta_1 = 1 + 0 - 0.4 = 0.6, and A_1 does not see A_2
    #   A = [0.86 + 0.72 * 0.6, 0.6, 0.88] = [1.292, 0.6, 0.88], where delta_0 = 1 + 0.9 * 0.4 - 0.5
    # env 1, truncated at step 1: bootstrapped with V(final obs) = values[2] = 0.3
    #   delta_1 = 1 + 0.9 * 0.3 - 0.4 = 0.87, A = [0.86 + 0.72 * 0.87, 0.87, 0.88]
    advantages = compute_gae(*three_steps(None), gamma=0.9, gae_lambda=0.8)
    assert advantages.dtype == np.float32
    assert_allclose(advantages, [[1.292, 1.4864], [0.6, 0.87], [0.88, 0.88]], rtol=1e-6)


def test_mc_returns_hand_computed():
    # env 0: G_2 = 1 + 0.9 * 0.2 = 1.18; G_1 = 1 (terminated); G_0 = 1 + 0.9 * 1 = 1.9
    # env 1: G_2 = 1.18; G_1 = 1 + 0.9 * 0.3 = 1.27 (truncated: V(final obs)); G_0 = 1 + 0.9 * 1.27
    returns = compute_mc_returns(*three_steps(None), gamma=0.9)
    assert returns.dtype == np.float32
    assert_allclose(returns, [[1.9, 2.143], [1.0, 1.27], [1.18, 1.18]], rtol=1e-6)


def random_rollout(seed, num_steps=40, num_envs=5):
    """Episodes end at random; some by termination, some by truncation, some by both at once."""
    rng = np.random.default_rng(seed)
    rewards = rng.standard_normal((num_steps, num_envs), dtype=np.float32)
    values = rng.standard_normal((num_steps, num_envs), dtype=np.float32)
    next_value = rng.standard_normal(num_envs, dtype=np.float32)
    ends = rng.random((num_steps, num_envs)) < 0.2
    kind = rng.integers(0, 3, (num_steps, num_envs))  # 0: terminated, 1: truncated, 2: both
    return rewards, values, next_value, ends & (kind != 1), ends & (kind != 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_one_is_monte_carlo(seed):
    rollout = random_rollout(seed)
    advantages = compute_gae(*rollout, gamma=0.97, gae_lambda=1.0)
    returns = compute_mc_returns(*rollout, gamma=0.97)
    assert_allclose(advantages + rollout[1], returns, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_lambda_zero_is_td_error(seed):
    rewards, values, next_value, terminations, truncations = random_rollout(seed)
    advantages = compute_gae(rewards, values, next_value, terminations, truncations, gamma=0.97, gae_lambda=0.0)
    next_values = np.concatenate([values[1:], next_value[None]])
    td_error = rewards + 0.97 * (~terminations) * next_values - values
    assert_allclose(advantages, td_error, rtol=1e-6, atol=1e-6)


def test_terminated_and_truncated_at_once_is_a_termination():
    rewards, values, next_value, terminations, truncations = three_steps(None)
    both = terminations | truncations  # both envs now end at step 1 by both flags at once
    advantages = compute_gae(rewards, values, next_value, both, both, gamma=0.9, gae_lambda=0.8)
    returns = compute_mc_returns(rewards, values, next_value, both, both, gamma=0.9)
    # as env 0 of the hand-computed examples: no bootstrap after step 1
    assert_allclose(advantages, [[1.292, 1.292], [0.6, 0.6], [0.88, 0.88]], rtol=1e-6)
    assert_allclose(returns, [[1.9, 1.9], [1.0, 1.0], [1.18, 1.18]], rtol=1e-6)


def test_monte_carlo_is_discounted_sum_without_done():
    rewards = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    no_done = np.zeros((3, 1), dtype=bool)
    returns = compute_mc_returns(rewards, np.zeros((3, 1), np.float32), np.array([10.0], np.float32), no_done, no_done,
                                 gamma=0.5)
    # G_0 = 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10
    assert_allclose(returns[:, 0], [4.0, 6.0, 8.0])


@pytest.mark.parametrize("estimator", ["gae", "mc"])
@pytest.mark.parametrize("kind", ["terminated", "truncated"])
def test_nothing_crosses_an_episode_boundary(estimator, kind):
    """What happens after an episode ends at step k must not change any estimate up to step k.

    Only values[k + 1], V(final observation), may matter, and only for a truncation.
    """
    num_steps, k = 10, 4
    rewards, values, next_value, _, _ = random_rollout(7, num_steps=num_steps, num_envs=3)
    ended = np.zeros((num_steps, 3), dtype=bool)
    ended[k] = True
    no_end = np.zeros_like(ended)
    terminations, truncations = (ended, no_end) if kind == "terminated" else (no_end, ended)

    def estimate(rewards, values, next_value):
        if estimator == "gae":
            return compute_gae(rewards, values, next_value, terminations, truncations, 0.99, 0.95)
        return compute_mc_returns(rewards, values, next_value, terminations, truncations, 0.99)

    before = estimate(rewards, values, next_value)
    later_rewards, later_values = rewards.copy(), values.copy()
    later_rewards[k + 1:] += 100.0
    later_values[k + 2:] -= 100.0
    after = estimate(later_rewards, later_values, next_value + 100.0)
    assert_allclose(after[: k + 1], before[: k + 1], rtol=1e-6)
    assert not np.allclose(after[k + 1:], before[k + 1:])

    final_value_changed = values.copy()
    final_value_changed[k + 1] += 1.0
    changed = estimate(rewards, final_value_changed, next_value)
    if kind == "terminated":  # no bootstrap after a termination
        assert_allclose(changed[k], before[k], rtol=1e-6)
    else:  # a truncation bootstraps with gamma * V(final observation)
        assert_allclose(changed[k], before[k] + 0.99, rtol=1e-5)
