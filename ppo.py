"""Proximal Policy Optimization (PPO) in one file, for gymnasium 1.x vector envs.

Read it top to bottom: flags, environments, the agent, the advantage estimators,
then the training loop (rollout -> advantages -> clipped-surrogate updates -> logging).

    python ppo.py --env-id CartPole-v1
    tensorboard --logdir runs

Paper: Schulman et al., "Proximal Policy Optimization Algorithms" (2017).
Details: Huang et al., "The 37 Implementation Details of Proximal Policy Optimization" (2022).
"""

import difflib
import importlib.util
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment (torch, numpy, random and the envs)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use CUDA when it is available"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""

    # Algorithm specific arguments
    env_id: str = "CartPole-v1"
    """the id of the environment (`module:Env-v0` imports `module` first to register it)"""
    total_timesteps: int = 500000
    """total timesteps of the experiments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 4
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    adv_estimator: Literal["gae", "mc"] = "gae"
    """the advantage estimator: `gae` (lambda-weighted TD errors) or `mc` (Monte-Carlo returns minus values)"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold (stop the update epochs early when exceeded)"""


class ConfigError(ValueError):
    """Bad flags or environment: reported as one line, exit code 2, before anything is written."""


def check_args(args: Args) -> gym.Env:
    """Reject bad input before any directory is made; returns a probe env for its spaces."""
    positive = ["total_timesteps", "learning_rate", "num_envs", "num_steps", "num_minibatches",
                "update_epochs", "clip_coef", "max_grad_norm"]
    for name in positive:
        if not getattr(args, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ["ent_coef", "vf_coef"]:
        if not getattr(args, name) >= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not 0 <= args.gamma <= 1:
        raise ConfigError(f"--gamma must be in [0, 1], got {args.gamma}")
    if not 0 <= args.gae_lambda <= 1:
        raise ConfigError(f"--gae-lambda must be in [0, 1], got {args.gae_lambda}")
    if not args.clip_coef < 1:
        raise ConfigError(f"--clip-coef must be in (0, 1), got {args.clip_coef}")
    if args.target_kl is not None and not args.target_kl > 0:
        raise ConfigError(f"--target-kl must be positive, got {args.target_kl}")
    batch_size = args.num_envs * args.num_steps
    if batch_size % args.num_minibatches != 0:
        raise ConfigError(f"num_envs * num_steps = {batch_size} is not divisible by "
                          f"--num-minibatches {args.num_minibatches}")
    if args.total_timesteps < batch_size:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is smaller than one batch "
                          f"(num_envs * num_steps = {batch_size})")
    for flag, module, package in [("track", "wandb", "wandb"), ("capture_video", "moviepy", "moviepy")]:
        if getattr(args, flag) and importlib.util.find_spec(module) is None:
            raise ConfigError(f"--{flag.replace('_', '-')} needs the '{package}' package: pip install {package}")

    try:
        env = gym.make(args.env_id)
    except gym.error.Error as e:
        name = args.env_id.split(":")[-1]
        close = difflib.get_close_matches(name, list(gym.registry.keys()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown env id '{args.env_id}' ({type(e).__name__}){hint}") from None
    except ModuleNotFoundError as e:  # the `module` of a `module:Env-v0` id
        reason = str(e).split(". ")[0]
        raise ConfigError(f"env id '{args.env_id}': cannot import module '{args.env_id.split(':')[0]}' "
                          f"({reason})") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise ConfigError(f"{args.env_id} has action space {env.action_space}; "
                          "this script supports Discrete action spaces")
    if not isinstance(env.observation_space, gym.spaces.Box):
        env.close()
        raise ConfigError(f"{args.env_id} has observation space {env.observation_space}; "
                          "the MLP agent needs a Box observation space")
    return env


def make_envs(args: Args, run_name: str) -> gym.vector.VectorEnv:
    """`num_envs` copies of the env, stepped together, autoresetting in NEXT_STEP mode."""
    if args.capture_video:
        # Only env 0 is recorded, so each copy is built by hand.
        def thunk(i):
            def make():
                if i == 0:
                    env = gym.make(args.env_id, render_mode="rgb_array")
                    return gym.wrappers.RecordVideo(env, f"videos/{run_name}")
                return gym.make(args.env_id)
            return make
        envs = gym.vector.SyncVectorEnv([thunk(i) for i in range(args.num_envs)])
    else:
        # Envs that register a vector entry point (CartPole-v1) step all copies in numpy,
        # far cheaper per step than one Python env per copy ("sync").
        spec = gym.spec(args.env_id.split(":")[-1])
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
        envs = gym.make_vec(args.env_id, num_envs=args.num_envs, vectorization_mode=mode)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias (implementation detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, envs: gym.vector.VectorEnv):
        super().__init__()
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        n_actions = int(envs.single_action_space.n)
        # Separate actor and critic: for small control tasks sharing a trunk makes the
        # value loss fight the policy loss for the same features.
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        # A small last layer (std 0.01) makes the first policy nearly uniform.
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)  # (batch,)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        """Sample an action (or score a given one). Returns (action, log_prob, entropy, value).

        The log-prob of the sampled action is kept in the rollout: the update compares
        it with the new policy's log-prob, ratio = exp(new - old).
        """
        log_probs = F.log_softmax(self.actor(x), dim=-1)  # (batch, n_actions), normalised
        if action is None:
            # Gumbel-max trick: argmax(log p + Gumbel noise) is a sample from p. Same
            # distribution as torch.distributions.Categorical, at a fraction of its cost.
            gumbel = -torch.log(-torch.log(torch.rand_like(log_probs)))
            action = torch.argmax(log_probs + gumbel, dim=-1)
        log_prob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return action, log_prob, entropy, self.get_value(x)


def compute_gae(rewards, values, next_value, terminations, truncations, gamma, gae_lambda):
    """Generalized Advantage Estimation (Schulman et al., 2016), run backwards in time.

    All inputs are (num_steps, num_envs) except next_value (num_envs,), V of the
    observation after the rollout. values[t + 1] (next_value at the last step)
    bootstraps step t; under NEXT_STEP autoreset it is V(final observation) when step t
    ended an episode.

        delta_t = r_t + gamma * (1 - terminated_t) * V_{t+1} - V_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    A termination has no future value; a truncation (time limit) does, so it is
    bootstrapped. Neither lets A_{t+1} of the next episode leak into step t.
    """
    terminations, truncations = terminations.float(), truncations.float()
    dones = torch.maximum(terminations, truncations)
    next_values = torch.cat([values[1:], next_value.unsqueeze(0)])  # V_{t+1}
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values
    decays = gamma * gae_lambda * (1.0 - dones)  # everything but the recursion, computed at once
    advantages = torch.zeros_like(rewards)
    last_advantage = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        last_advantage = deltas[t] + decays[t] * last_advantage
        advantages[t] = last_advantage
    return advantages


def compute_mc_returns(rewards, values, next_value, terminations, truncations, gamma):
    """Monte-Carlo (discounted) returns, run backwards in time; shapes as in compute_gae.

        G_t = r_t + gamma * ((1 - done_t) * G_{t+1} + truncated_t * V_{t+1})

    The rollout may cut an episode: the return after the last step is bootstrapped
    with next_value, and a truncated episode with the value of its final observation.
    """
    terminations, truncations = terminations.float(), truncations.float()
    dones = torch.maximum(terminations, truncations)
    next_values = torch.cat([values[1:], next_value.unsqueeze(0)])
    returns = torch.zeros_like(rewards)
    next_return = next_value
    for t in reversed(range(rewards.shape[0])):
        next_return = rewards[t] + gamma * ((1.0 - dones[t]) * next_return + truncations[t] * next_values[t])
        returns[t] = next_return
    return returns


def ppo_loss(agent, obs, actions, old_log_probs, old_values, advantages, returns, args):
    """The clipped-surrogate PPO loss on one minibatch. Returns (loss, stats dict)."""
    _, new_log_prob, entropy, new_value = agent.get_action_and_value(obs, actions)
    log_ratio = new_log_prob - old_log_probs
    ratio = log_ratio.exp()

    with torch.no_grad():
        # KL(old || new) estimators: the naive -log r, and (r - 1) - log r, which is unbiased
        # and never negative (http://joschu.net/blog/kl-approx.html).
        old_approx_kl = (-log_ratio).mean()
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # Policy loss: maximise min(r * A, clip(r, 1 - eps, 1 + eps) * A), written as a minimisation.
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss, optionally clipped around the rollout's value like the policy.
    if args.clip_vloss:
        v_loss_unclipped = (new_value - returns) ** 2
        v_clipped = old_values + torch.clamp(new_value - old_values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    else:
        v_loss = 0.5 * ((new_value - returns) ** 2).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    stats = dict(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy_loss,
                 old_approx_kl=old_approx_kl, approx_kl=approx_kl, clipfrac=clipfrac)
    return loss, stats


def train(args: Args) -> Agent:
    probe_env = check_args(args)  # raises ConfigError before anything is written
    probe_env.close()
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size

    # A new directory for every run: never write into an old run's logs.
    run_name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    os.makedirs("runs", exist_ok=True)
    for suffix in [""] + [f"_{i}" for i in range(1, 1000)]:
        try:  # mkdir is atomic: two runs started in the same second get different directories
            os.mkdir(f"runs/{run_name}{suffix}")
            run_name += suffix
            break
        except FileExistsError:
            continue
    else:
        raise ConfigError(f"runs/{run_name}: 1000 runs of that name already exist")
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_name, save_code=True)
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" +
                    "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items()))

    # Seeding: the same flags and seed give the same run on the CPU.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # At these sizes each torch op costs its call overhead, not arithmetic: more threads
    # only add synchronisation (and are slower still when another process wants a core).
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    envs = make_envs(args, run_name)
    agent = Agent(envs).to(device)
    # foreach=True updates all parameters with a few multi-tensor ops instead of a loop over them.
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)

    # Rollout storage, (num_steps, num_envs, ...). What the agent produces stays on the device;
    # what the env returns is kept in numpy and moved once per rollout.
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    log_probs = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminations = np.zeros((args.num_steps, args.num_envs), dtype=bool)
    truncations = np.zeros((args.num_steps, args.num_envs), dtype=bool)
    # resets[t] marks a step that only reset its env (NEXT_STEP autoreset): the action was
    # ignored and the reward is 0. It is no transition, so it gets no weight in the update.
    resets = np.zeros((args.num_steps, args.num_envs), dtype=bool)

    global_step = 0
    start_time = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
    next_done = np.zeros(args.num_envs, dtype=bool)
    episode_returns = []  # every finished episode, for the console's running mean
    shuffle_rng = np.random.default_rng(args.seed)

    for iteration in range(1, num_iterations + 1):
        # Anneal the learning rate linearly to 0 over training (detail 4).
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # ROLLOUT: play num_steps steps in every env with the current policy.
        finished = []  # (global_step, return, length), written to TensorBoard after the rollout
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            resets[step] = next_done
            with torch.inference_mode():
                action, log_prob, _, value = agent.get_action_and_value(next_obs)
            actions[step] = action
            log_probs[step] = log_prob
            values[step] = value

            next_obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
            rewards[step] = reward
            terminations[step] = terminated
            truncations[step] = truncated
            next_done = terminated | truncated
            next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
            if "episode" in info:
                for i in np.flatnonzero(info["_episode"]):
                    finished.append((global_step, info["episode"]["r"][i], info["episode"]["l"][i]))

        for step_done, episode_return, episode_length in finished:
            writer.add_scalar("charts/episodic_return", episode_return, step_done)
            writer.add_scalar("charts/episodic_length", episode_length, step_done)
            episode_returns.append(float(episode_return))

        # ADVANTAGES, computed backwards from the value of the observation after the rollout.
        with torch.inference_mode():
            next_value = agent.get_value(next_obs)
        to_device = lambda a: torch.as_tensor(a, device=device)
        rewards_t, terminations_t, truncations_t = to_device(rewards), to_device(terminations), to_device(truncations)
        if args.adv_estimator == "gae":
            advantages = compute_gae(rewards_t, values, next_value, terminations_t, truncations_t,
                                     args.gamma, args.gae_lambda)
            returns = advantages + values
        else:
            returns = compute_mc_returns(rewards_t, values, next_value, terminations_t, truncations_t, args.gamma)
            advantages = returns - values

        # Flatten (num_steps, num_envs) into one batch and keep only real transitions.
        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_actions, b_log_probs, b_values = actions.reshape(-1), log_probs.reshape(-1), values.reshape(-1)
        b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)
        b_valid = np.flatnonzero(~resets.reshape(-1))

        # UPDATE: update_epochs passes over the batch, each shuffled into num_minibatches.
        epoch_stats = []
        for epoch in range(args.update_epochs):
            for mb_inds in np.array_split(shuffle_rng.permutation(b_valid), args.num_minibatches):
                mb = torch.as_tensor(mb_inds, device=device)
                loss, stats = ppo_loss(agent, b_obs[mb], b_actions[mb], b_log_probs[mb], b_values[mb],
                                       b_advantages[mb], b_returns[mb], args)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
                epoch_stats.append(torch.stack(list(stats.values())))
            if args.target_kl is not None and stats["approx_kl"] > args.target_kl:
                break

        # LOGGING, once per iteration: the last minibatch's losses (clipfrac averaged), as CleanRL.
        last = dict(zip(stats.keys(), epoch_stats[-1].tolist()))
        last["clipfrac"] = torch.stack(epoch_stats)[:, -1].mean().item()
        y_pred, y_true = b_values[b_valid], b_returns[b_valid]
        var_y = y_true.var().item()
        explained_var = np.nan if var_y == 0 else 1 - (y_true - y_pred).var().item() / var_y
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        for key, value in last.items():
            writer.add_scalar(f"losses/{key}", value, global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        sps = int(global_step / (time.time() - start_time))
        writer.add_scalar("charts/SPS", sps, global_step)
        if iteration % max(1, num_iterations // 20) == 0 or iteration == num_iterations:
            recent = f"{np.mean(episode_returns[-20:]):8.2f}" if episode_returns else "     n/a"
            print(f"step {global_step:>9,}  mean return (last 20) {recent}  SPS {sps:,}", flush=True)

    envs.close()
    writer.close()
    if args.track:
        wandb.finish()
    return agent


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        train(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
