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
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
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
    save_model: bool = False
    """whether to save the model into the `runs/{run_name}` folder"""
    checkpoint_every: int = 25
    """write a training checkpoint (runs/{run_name}/checkpoint.pt) every this many iterations and at the end; 0: never"""
    resume: str | None = None
    """continue the run of this checkpoint (or run directory) to its original --total-timesteps"""
    eval_episodes: int = 0
    """after training, evaluate the greedy policy for this many episodes (`eval/episodic_return`)"""
    eval_only: bool = False
    """do not train: evaluate the model at --model-path for --eval-episodes episodes"""
    model_path: str | None = None
    """the saved model (`.cleanrl_model`) that --eval-only evaluates"""

    # Algorithm specific arguments
    env_id: str = "CartPole-v1"
    """the id of the environment (`module:Env-v0` imports `module` first to register it)"""
    # A flag marked "default: a / b" that you do not give takes a for Discrete actions, b for Box
    # (continuous) actions: CleanRL's ppo.py and ppo_continuous_action.py defaults.
    total_timesteps: int | None = None
    """total timesteps of the experiments (default: 500000 / 1000000)"""
    learning_rate: float | None = None
    """the learning rate of the optimizer (default: 2.5e-4 / 3e-4)"""
    num_envs: int | None = None
    """the number of parallel game environments (default: 4 / 1)"""
    num_steps: int | None = None
    """the number of steps to run in each environment per policy rollout (default: 128 / 2048)"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    adv_estimator: Literal["gae", "mc"] = "gae"
    """the advantage estimator: `gae` (lambda-weighted TD errors) or `mc` (Monte-Carlo returns minus values)"""
    num_minibatches: int | None = None
    """the number of mini-batches (default: 4 / 32)"""
    update_epochs: int | None = None
    """the K epochs to update the policy (default: 4 / 10)"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float | None = None
    """coefficient of the entropy (default: 0.01 / 0.0)"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold (stop the update epochs early when exceeded)"""

    # Continuous (Box) actions only
    norm_obs: bool = True
    """normalise observations by their running mean and std, then clip them to [-10, 10]"""
    norm_reward: bool = True
    """scale rewards by the running std of the discounted return, then clip them to [-10, 10]"""
    clip_action: bool = True
    """clip actions to the action space's bounds when sending them to the env (stored unclipped)"""


# CleanRL's defaults for the flags above marked "default: a / b".
DEFAULTS = {
    "discrete": dict(total_timesteps=500_000, learning_rate=2.5e-4, num_envs=4, num_steps=128,
                     num_minibatches=4, update_epochs=4, ent_coef=0.01),
    "continuous": dict(total_timesteps=1_000_000, learning_rate=3e-4, num_envs=1, num_steps=2048,
                       num_minibatches=32, update_epochs=10, ent_coef=0.0),
}


class ConfigError(ValueError):
    """Bad flags or environment: reported as one line, exit code 2, before anything is written."""


def check_args(args: Args) -> Args:
    """Reject bad input before any directory is made; returns args with the defaults filled in."""
    env = probe_env(args.env_id)
    kind = "continuous" if isinstance(env.action_space, gym.spaces.Box) else "discrete"
    env.close()
    args = replace(args, **{k: v for k, v in DEFAULTS[kind].items() if getattr(args, k) is None})

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
    if not args.exp_name or "/" in args.exp_name or args.exp_name.startswith("."):
        raise ConfigError(f"--exp-name must be a plain name (part of a directory name), got {args.exp_name!r}")
    for name in ["checkpoint_every", "eval_episodes"]:
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.eval_only and (args.model_path is None or args.eval_episodes == 0):
        raise ConfigError("--eval-only needs --model-path PATH and --eval-episodes N")
    if args.model_path is not None and not args.eval_only:
        raise ConfigError("--model-path is read only with --eval-only")
    if args.eval_only and args.resume:
        raise ConfigError("--eval-only and --resume exclude each other")
    batch_size = args.num_envs * args.num_steps
    if batch_size < 2 * args.num_minibatches:  # advantage normalisation needs a std
        raise ConfigError(f"num_envs * num_steps = {batch_size} gives minibatches of fewer than 2 samples "
                          f"with --num-minibatches {args.num_minibatches}")
    if batch_size % args.num_minibatches != 0:
        raise ConfigError(f"num_envs * num_steps = {batch_size} is not divisible by "
                          f"--num-minibatches {args.num_minibatches}")
    if args.total_timesteps < batch_size:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is smaller than one batch "
                          f"(num_envs * num_steps = {batch_size})")
    for flag, module, package in [("track", "wandb", "wandb"), ("capture_video", "moviepy", "moviepy")]:
        if getattr(args, flag) and importlib.util.find_spec(module) is None:
            raise ConfigError(f"--{flag.replace('_', '-')} needs the '{package}' package: pip install {package}")

    return args


def probe_env(env_id: str) -> gym.Env:
    """One env, made to check the id and its spaces; the caller closes it."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        extra = " (pip install -r requirements-mujoco.txt)" if "mujoco" in str(e).lower() else ""
        raise ConfigError(f"{env_id} needs a package that is not installed{extra}: "
                          f"{str(e).splitlines()[0]}") from None
    except gym.error.Error as e:
        name = env_id.split(":")[-1]
        close = difflib.get_close_matches(name, list(gym.registry.keys()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown env id '{env_id}' ({type(e).__name__}){hint}") from None
    except ModuleNotFoundError as e:  # the `module` of a `module:Env-v0` id
        reason = str(e).split(". ")[0]
        raise ConfigError(f"env id '{env_id}': cannot import module '{env_id.split(':')[0]}' "
                          f"({reason})") from None
    problem = None
    if not isinstance(env.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        problem = (f"{env_id} has action space {env.action_space}; "
                   "this script supports Discrete and Box action spaces")
    elif not (isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1):
        problem = (f"{env_id} has observation space {env.observation_space}; "
                   "the MLP agent needs a flat Box (a vector)")
    if problem:
        env.close()
        raise ConfigError(problem)
    return env


def make_envs(args: Args, video_folder: str | None = None) -> gym.vector.VectorEnv:
    """`num_envs` copies of the env, stepped together, autoresetting in NEXT_STEP mode."""
    if video_folder is not None:
        # Only env 0 is recorded, so each copy is built by hand.
        def make(i):
            if i == 0:
                return gym.wrappers.RecordVideo(gym.make(args.env_id, render_mode="rgb_array"), video_folder)
            return gym.make(args.env_id)
        envs = gym.vector.SyncVectorEnv([lambda i=i: make(i) for i in range(args.num_envs)])
    else:
        # Envs that register a vector entry point (CartPole-v1) step all copies in numpy,
        # far cheaper per step than one Python env per copy ("sync").
        spec = gym.spec(args.env_id.split(":")[-1])
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
        envs = gym.make_vec(args.env_id, num_envs=args.num_envs, vectorization_mode=mode)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # first: it records the env's own rewards
    if isinstance(envs.single_action_space, gym.spaces.Box):
        # Continuous-control details 17-19 (Huang et al.), with gymnasium's wrappers.
        if args.clip_action:
            envs = gym.wrappers.vector.ClipAction(envs)
        if args.norm_obs:
            envs = gym.wrappers.vector.NormalizeObservation(envs)
            envs = gym.wrappers.vector.TransformObservation(envs, lambda obs: np.clip(obs, -10, 10),
                                                           envs.observation_space)
        if args.norm_reward:
            envs = gym.wrappers.vector.NormalizeReward(envs, gamma=args.gamma)
            envs = gym.wrappers.vector.ClipReward(envs, -10, 10)
    return envs


def find_wrapper(envs: gym.vector.VectorEnv, wrapper_type: type):
    """The wrapper of that type in the envs' stack of wrappers, or None."""
    while isinstance(envs, gym.vector.VectorWrapper):
        if isinstance(envs, wrapper_type):
            return envs
        envs = envs.env
    return None


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias (implementation detail 2)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, envs: gym.vector.VectorEnv):
        super().__init__()
        obs_shape = envs.single_observation_space.shape
        action_space = envs.single_action_space
        self.continuous = isinstance(action_space, gym.spaces.Box)
        # Discrete: one logit per action. Box: the mean of each action dimension.
        n_outputs = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        # Separate actor and critic: for small control tasks sharing a trunk makes the
        # value loss fight the policy loss for the same features.
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_shape[0], 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        # A small last layer (std 0.01) makes the first policy nearly uniform (or centred on 0).
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_shape[0], 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, n_outputs), std=0.01),
        )
        if self.continuous:
            # The log standard deviation of the Gaussian policy: learned, but not a function of
            # the state, and initialised at 0 (std 1).
            self.actor_logstd = nn.Parameter(torch.zeros(1, n_outputs))
        # Observation normalisation statistics (continuous actions, --norm-obs): the env wrapper
        # updates them in training; they live here so that a saved agent carries them.
        self.register_buffer("obs_mean", torch.zeros(obs_shape))
        self.register_buffer("obs_var", torch.ones(obs_shape))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)  # (batch,)

    def sample_action(self, actor_out: torch.Tensor) -> torch.Tensor:
        """Sample from the policy given the actor's output (logits, or Gaussian means)."""
        if self.continuous:
            # Stored unclipped (detail 17): the env wrapper clips what is sent, the log-prob is of this.
            return actor_out + self.actor_logstd.exp() * torch.randn_like(actor_out)
        # Gumbel-max trick: argmax(logits + Gumbel noise) is a sample from softmax(logits), and
        # -log(E), E ~ Exponential(1), is Gumbel noise. Same distribution as
        # torch.distributions.Categorical, at a fraction of its cost.
        return torch.argmax(actor_out - torch.empty_like(actor_out).exponential_().log(), dim=-1)

    def get_action(self, x: torch.Tensor) -> torch.Tensor:
        """Sample an action and nothing else: all the rollout needs at each step."""
        return self.sample_action(self.actor(x))

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        """Score the given actions (or sample new ones). Returns (action, log_prob, entropy, value).

        The update compares the new policy's log-prob with the rollout policy's,
        ratio = exp(new - old).
        """
        actor_out = self.actor(x)  # (batch, n_actions) logits, or (batch, action_dim) means
        if action is None:
            action = self.sample_action(actor_out)
        if self.continuous:
            # Diagonal Gaussian, dimensions independent: log-probs and entropies add up.
            mean, log_std = actor_out, self.actor_logstd.expand_as(actor_out)
            log_prob = (-0.5 * ((action - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
            return action, log_prob, entropy, self.get_value(x)
        log_probs = F.log_softmax(actor_out, dim=-1)  # (batch, n_actions), normalised
        log_prob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return action, log_prob, entropy, self.get_value(x)

    def get_greedy_action(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable action (the mean, for Box): for evaluation, where exploring only adds noise."""
        return self.actor(x) if self.continuous else self.actor(x).argmax(-1)


def compute_gae(rewards, values, next_value, terminations, truncations, gamma, gae_lambda):
    """Generalized Advantage Estimation (Schulman et al., 2016), run backwards in time.

    All inputs are numpy arrays, (num_steps, num_envs) except next_value (num_envs,), V of
    the observation after the rollout. values[t + 1] (next_value at the last step)
    bootstraps step t; under NEXT_STEP autoreset it is V(final observation) when step t
    ended an episode.

        delta_t = r_t + gamma * (1 - terminated_t) * V_{t+1} - V_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    A termination has no future value; a truncation (time limit) does, so it is
    bootstrapped. Neither lets A_{t+1} of the next episode leak into step t.
    The loop runs in numpy: 128 tiny steps cost a microsecond each there, several as torch ops.
    """
    terminations, truncations = terminations.astype(np.float32), truncations.astype(np.float32)
    dones = np.maximum(terminations, truncations)
    next_values = np.concatenate([values[1:], next_value[None]])  # V_{t+1}
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values
    decays = gamma * gae_lambda * (1.0 - dones)  # everything but the recursion, computed at once
    advantages = np.zeros_like(rewards)
    last_advantage = np.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        last_advantage = deltas[t] + decays[t] * last_advantage
        advantages[t] = last_advantage
    return advantages


def compute_mc_returns(rewards, values, next_value, terminations, truncations, gamma):
    """Monte-Carlo (discounted) returns, run backwards in time; arrays as in compute_gae.

        G_t = r_t + gamma * ((1 - done_t) * G_{t+1} + (1 - terminated_t) * truncated_t * V_{t+1})

    The rollout may cut an episode: the return after the last step is bootstrapped
    with next_value, and a truncated episode with the value of its final observation.
    A step can be both terminated and truncated (the pole falls on the time limit's step):
    the termination wins, there is no future.
    """
    terminations, truncations = terminations.astype(np.float32), truncations.astype(np.float32)
    dones = np.maximum(terminations, truncations)
    truncations = truncations * (1.0 - terminations)
    next_values = np.concatenate([values[1:], next_value[None]])
    returns = np.zeros_like(rewards)
    next_return = next_value
    for t in reversed(range(len(rewards))):
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


class Adam:
    """Adam (Kingma & Ba, 2015) with gradient-norm clipping, over one flat vector of parameters.

    The update of torch.optim.Adam followed by nn.utils.clip_grad_norm_: with g the gradient,
    clipped to norm max_grad_norm, and t the number of steps taken,
        m = beta1 * m + (1 - beta1) * g,      v = beta2 * v + (1 - beta2) * g^2
        theta -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    Why not torch.optim.Adam: at these sizes each op costs its call overhead, not its
    arithmetic, and clipping plus Adam there run several ops per parameter tensor (12 here),
    where this runs a handful in all: 1.3x faster updates. It also skips torch.optim's import of
    torch._dynamo, about 1.3 s of every run's start-up. The model's parameters become views
    into one vector, `self.flat_params`, so updating that vector updates the model.
    """

    def __init__(self, parameters, lr: float, eps: float, betas=(0.9, 0.999)):
        self.parameters = list(parameters)
        self.flat_params = torch.cat([p.detach().flatten() for p in self.parameters])
        offset = 0
        for p in self.parameters:
            p.data = self.flat_params[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        self.exp_avg = torch.zeros_like(self.flat_params)  # m
        self.exp_avg_sq = torch.zeros_like(self.flat_params)  # v
        self.steps_taken = 0
        self.lr, self.eps, self.betas = lr, eps, betas

    @torch.no_grad()
    def step(self, max_grad_norm: float) -> None:
        """Update the parameters from their .grad, then clear the gradients."""
        grad = torch.cat([p.grad.flatten() for p in self.parameters])
        for p in self.parameters:
            p.grad = None
        grad *= (max_grad_norm / (grad.norm() + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s formula
        self.steps_taken += 1
        beta1, beta2 = self.betas
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq / (1 - beta2 ** self.steps_taken)).sqrt_().add_(self.eps)
        self.flat_params.addcdiv_(self.exp_avg, denom, value=-self.lr / (1 - beta1 ** self.steps_taken))

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps_taken = state["steps_taken"]


CHECKPOINT_FORMAT = "ppo.py checkpoint v2"  # v1 held torch.optim.Adam's state


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unwritable checkpoint): reported as one line."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint was written."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


# Flags that change what a resumed run computes: a resume keeps the checkpoint's values.
RESUME_FIXED = ["env_id", "num_envs", "num_steps", "exp_name", "seed", "total_timesteps"]


def first_line(e: Exception) -> str:
    """An exception's message cut to one line, for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def get_device(args: Args) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")


def save_checkpoint(path: str, checkpoint: dict) -> None:
    """Write atomically: a crash leaves the old checkpoint or the new one, never half of one."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise TrainingError(f"cannot write checkpoint {path}: {e.strerror or e}; "
                            "the last good checkpoint is untouched") from None


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint (or the one in a run directory); any damage is a one-line ConfigError."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    try:
        # weights_only: tensors and plain Python values only; pickled code is refused.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"no checkpoint at {path}") from None
    except Exception as e:  # truncated, corrupt, or pickled code: torch raises many kinds
        raise ConfigError(f"cannot read checkpoint {path}: {first_line(e)}") from None
    if not isinstance(checkpoint, dict) or not str(checkpoint.get("format")).startswith("ppo.py checkpoint"):
        raise ConfigError(f"{path} is not a ppo.py checkpoint")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is a {checkpoint['format']}, written by an older ppo.py; "
                          f"this one resumes only {CHECKPOINT_FORMAT}")
    return checkpoint


def resumed_args(args: Args, saved: dict) -> Args:
    """The checkpoint's flags, with the ones given now that do not change the experiment."""
    given = {k: v for k, v in asdict(args).items() if v != getattr(Args(), k) and k != "resume"}
    changed = [k for k in RESUME_FIXED if k in given and given[k] != saved[k]]
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')} (was {saved[k]!r})" for k in changed)
        raise ConfigError(f"cannot change {flags} when resuming; start a new run instead")
    return replace(Args(**saved), **given, resume=args.resume)


NORMALIZERS = {"obs": (gym.wrappers.vector.NormalizeObservation, "obs_rms"),
               "return": (gym.wrappers.vector.NormalizeReward, "return_rms")}


def get_env_stats(envs: gym.vector.VectorEnv) -> dict:
    """The running statistics of the normalisation wrappers (continuous actions), for checkpoints."""
    stats = {}
    for name, (wrapper_type, attr) in NORMALIZERS.items():
        wrapper = find_wrapper(envs, wrapper_type)
        if wrapper is not None:
            rms = getattr(wrapper, attr)
            stats[name] = {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var), "count": float(rms.count)}
    return stats


def set_env_stats(envs: gym.vector.VectorEnv, stats: dict) -> None:
    for name, (wrapper_type, attr) in NORMALIZERS.items():
        wrapper = find_wrapper(envs, wrapper_type)
        if wrapper is not None and name in stats:
            rms = getattr(wrapper, attr)
            rms.mean, rms.var, rms.count = stats[name]["mean"].numpy(), stats[name]["var"].numpy(), stats[name]["count"]


def store_obs_stats(agent: Agent, envs: gym.vector.VectorEnv) -> None:
    """Copy the observation-normalisation statistics into the agent, which is saved with them."""
    normalizer = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    if normalizer is not None:
        agent.obs_mean.copy_(torch.as_tensor(normalizer.obs_rms.mean))
        agent.obs_var.copy_(torch.as_tensor(normalizer.obs_rms.var))


def evaluate(agent: Agent, args: Args, episodes: int, device, video_folder: str | None) -> np.ndarray:
    """Returns of `episodes` episodes played with the greedy policy, on a fresh env."""
    envs = make_envs(replace(args, num_envs=1), video_folder)
    normalizer = find_wrapper(envs, gym.wrappers.vector.NormalizeObservation)
    if normalizer is not None:  # the agent's own statistics, frozen
        normalizer.update_running_mean = False
        normalizer.obs_rms.mean = agent.obs_mean.cpu().double().numpy()
        normalizer.obs_rms.var = agent.obs_var.cpu().double().numpy()
    obs, _ = envs.reset(seed=args.seed + 100_000)  # not the seeds training started from
    returns = []
    while len(returns) < episodes:
        with torch.inference_mode():
            action = agent.get_greedy_action(torch.as_tensor(obs, dtype=torch.float32, device=device))
        obs, _, _, _, info = envs.step(action.cpu().numpy())
        if "episode" in info:
            returns.append(float(info["episode"]["r"][0]))
    envs.close()
    return np.array(returns)


def new_run_dir(args: Args) -> str:
    """runs/{env_id}__{exp_name}__{seed}__{unix time}: a new directory, never an old run's."""
    run_name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    try:
        os.makedirs("runs", exist_ok=True)
        for suffix in [""] + [f"_{i}" for i in range(1, 1000)]:
            try:  # mkdir is atomic: two runs started in the same second get different directories
                os.mkdir(f"runs/{run_name}{suffix}")
                return run_name + suffix
            except FileExistsError:
                continue
    except OSError as e:
        raise ConfigError(f"cannot create the run directory in {os.path.abspath('runs')}: {e.strerror}") from None
    raise ConfigError(f"runs/{run_name}: 1000 runs of that name already exist")


def train(args: Args) -> Agent:
    # Everything that can be refused is checked before anything is written.
    checkpoint = load_checkpoint(args.resume) if args.resume else None
    if checkpoint is not None:
        args = resumed_args(args, checkpoint["args"])
    args = check_args(args)
    if args.eval_only:
        return evaluate_saved_model(args)
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size

    if checkpoint:  # the same run, in the directory its checkpoint lies in
        run_name = checkpoint["run_name"]
        run_dir = args.resume if os.path.isdir(args.resume) else os.path.dirname(args.resume) or "."
    else:
        run_name = new_run_dir(args)
        run_dir = f"runs/{run_name}"
    checkpoint_path = f"{run_dir}/checkpoint.pt"
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_name, id=run_name, resume="allow", save_code=True)
    start_iteration = checkpoint["iteration"] if checkpoint else 0  # iterations already done
    # purge_step: on resume, TensorBoard hides whatever the old run logged after its checkpoint.
    writer = SummaryWriter(run_dir, purge_step=start_iteration * batch_size + 1 if checkpoint else None)
    if not checkpoint:
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
    device = get_device(args)

    envs = make_envs(args, f"videos/{run_name}" if args.capture_video else None)
    agent = Agent(envs).to(device)
    optimizer = Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    shuffle_rng = np.random.default_rng(args.seed)
    if checkpoint:
        agent.load_state_dict(checkpoint["agent"])
        set_env_stats(envs, checkpoint["env_stats"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["torch_rng"])
        shuffle_rng.bit_generator.state = checkpoint["shuffle_rng"]

    def write_checkpoint(iteration):
        store_obs_stats(agent, envs)
        save_checkpoint(checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "args": asdict(args), "run_name": run_name,
            "iteration": iteration, "global_step": iteration * batch_size,
            "agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(), "shuffle_rng": shuffle_rng.bit_generator.state,
            "env_stats": get_env_stats(envs),
        })

    if args.checkpoint_every and not checkpoint:
        write_checkpoint(0)  # proves the directory is writable before any training

    # Rollout storage, (num_steps, num_envs, ...). What the agent sees and does stays on the
    # device; what only the env produces (rewards, episode ends) stays in numpy, where the
    # advantages are computed.
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape, device=device)
    action_shape = envs.single_action_space.shape  # () for Discrete
    actions = torch.zeros((args.num_steps, args.num_envs) + action_shape, device=device,
                          dtype=torch.float32 if agent.continuous else torch.long)
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminations = np.zeros((args.num_steps, args.num_envs), dtype=bool)
    truncations = np.zeros((args.num_steps, args.num_envs), dtype=bool)
    # resets[t] marks a step that only reset its env (NEXT_STEP autoreset): the action was
    # ignored and the reward is 0. It is no transition, so it gets no weight in the update.
    resets = np.zeros((args.num_steps, args.num_envs), dtype=bool)

    global_step = start_iteration * batch_size
    start_time = time.time()
    # A resumed run starts new episodes from new seeds.
    next_obs, _ = envs.reset(seed=args.seed + start_iteration * args.num_envs)
    envs.action_space.seed(args.seed + start_iteration)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
    next_done = np.zeros(args.num_envs, dtype=bool)
    episode_returns = []  # every finished episode, for the console's running mean

    # Ctrl-C or SIGTERM: finish the current env step, checkpoint, then stop. A second one quits at once.
    stop_signal = []

    def request_stop(signum, frame):
        if stop_signal:
            os._exit(128 + signum)  # checkpoints are replaced atomically, so none is left half-written
        stop_signal.append(signum)
        print(f"\n{signal.Signals(signum).name}: stopping after this step (again to quit at once)", flush=True)

    handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

    try:
        for iteration in range(start_iteration + 1, num_iterations + 1):
            # Anneal the learning rate linearly toward 0 over training (detail 4).
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / num_iterations
                optimizer.lr = frac * args.learning_rate

            # ROLLOUT: play num_steps steps in every env with the current policy. It only acts, so
            # no gradient is tracked (inference mode skips autograd's bookkeeping altogether).
            finished = []  # (global_step, return, length), written to TensorBoard after the rollout
            with torch.inference_mode():
                for step in range(args.num_steps):
                    global_step += args.num_envs
                    obs[step] = next_obs
                    resets[step] = next_done
                    action = agent.get_action(next_obs)  # log-probs and values come after the rollout
                    actions[step] = action

                    next_obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
                    rewards[step] = reward
                    terminations[step] = terminated
                    truncations[step] = truncated
                    next_done = terminated | truncated
                    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
                    if "episode" in info:
                        for i in np.flatnonzero(info["_episode"]):
                            finished.append((global_step, info["episode"]["r"][i], info["episode"]["l"][i]))
                    if stop_signal:
                        break
            if stop_signal:  # drop the partial rollout: the checkpoint is the state before it
                write_checkpoint(iteration - 1)
                writer.close()
                print(f"checkpoint saved at step {(iteration - 1) * batch_size:,}; resume with:\n"
                      f"  python {sys.argv[0] if sys.argv[0].endswith('ppo.py') else 'ppo.py'} --resume {run_dir}",
                      flush=True)
                raise TrainingInterrupted(stop_signal[0])

            for step_done, episode_return, episode_length in finished:
                writer.add_scalar("charts/episodic_return", episode_return, step_done)
                writer.add_scalar("charts/episodic_length", episode_length, step_done)
                episode_returns.append(float(episode_return))

            # What the update needs from the rollout's policy, in one batched call rather than
            # one per step: the log-prob of each action taken, and the value of each observation.
            # The policy did not change during the rollout, so these are the same numbers.
            b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
            b_actions = actions.reshape((-1,) + action_shape)
            with torch.no_grad():  # (inference_mode tensors could not be used in the loss)
                _, b_log_probs, _, b_values = agent.get_action_and_value(b_obs, b_actions)
                next_value = agent.get_value(next_obs)  # bootstraps the steps after the rollout

            # ADVANTAGES, computed backwards through the rollout (numpy, on the host).
            values = b_values.cpu().numpy().reshape(args.num_steps, args.num_envs)
            next_value = next_value.cpu().numpy()
            if args.adv_estimator == "gae":
                advantages = compute_gae(rewards, values, next_value, terminations, truncations,
                                         args.gamma, args.gae_lambda)
                returns = advantages + values
            else:
                returns = compute_mc_returns(rewards, values, next_value, terminations, truncations, args.gamma)
                advantages = returns - values

            # Flatten (num_steps, num_envs) into one batch and keep only real transitions.
            b_advantages = torch.as_tensor(advantages.reshape(-1), device=device)
            b_returns = torch.as_tensor(returns.reshape(-1), device=device)
            b_valid = np.flatnonzero(~resets.reshape(-1))

            # UPDATE: update_epochs passes over the batch, each shuffled into num_minibatches.
            epoch_stats = []
            for epoch in range(args.update_epochs):
                for mb_inds in np.array_split(shuffle_rng.permutation(b_valid), args.num_minibatches):
                    mb = torch.as_tensor(mb_inds, device=device)
                    loss, stats = ppo_loss(agent, b_obs[mb], b_actions[mb], b_log_probs[mb], b_values[mb],
                                           b_advantages[mb], b_returns[mb], args)
                    loss.backward()
                    optimizer.step(args.max_grad_norm)  # clips the gradient norm, then Adam
                    epoch_stats.append(torch.stack(list(stats.values())))
                if args.target_kl is not None and stats["approx_kl"] > args.target_kl:
                    break

            # A non-finite loss or weight would poison every later update (and checkpoint): stop here.
            all_stats = torch.stack(epoch_stats)  # (updates, len(stats))
            for name, column in zip(stats.keys(), all_stats.T):
                if not torch.isfinite(column).all():
                    raise TrainingError(f"iteration {iteration}: {name} is not finite ({column.tolist()[-1]})")
            for name, param in agent.named_parameters():
                if not torch.isfinite(param).all():
                    raise TrainingError(f"iteration {iteration}: parameter {name} is not finite")

            # LOGGING, once per iteration: the last minibatch's losses (clipfrac averaged), as CleanRL.
            logged = dict(zip(stats.keys(), all_stats[-1].tolist()))
            logged["clipfrac"] = all_stats[:, list(stats).index("clipfrac")].mean().item()
            y_pred, y_true = values.reshape(-1)[b_valid], returns.reshape(-1)[b_valid]
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            writer.add_scalar("charts/learning_rate", optimizer.lr, global_step)
            for key, value in logged.items():
                writer.add_scalar(f"losses/{key}", value, global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            sps = int((global_step - start_iteration * batch_size) / (time.time() - start_time))
            writer.add_scalar("charts/SPS", sps, global_step)
            if iteration % max(1, num_iterations // 20) == 0 or iteration == num_iterations:
                recent = f"{np.mean(episode_returns[-20:]):8.2f}" if episode_returns else "     n/a"
                print(f"step {global_step:>9,}  mean return (last 20) {recent}  SPS {sps:,}", flush=True)
            if args.checkpoint_every and (iteration % args.checkpoint_every == 0 or iteration == num_iterations):
                write_checkpoint(iteration)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        envs.close()

    store_obs_stats(agent, envs)  # the agent leaves with the statistics it was trained on
    if args.save_model:
        model_path = f"{run_dir}/{args.exp_name}.cleanrl_model"
        torch.save(agent.state_dict(), model_path)
        print(f"model saved to {model_path}")
    if args.eval_episodes:
        eval_returns = evaluate(agent, args, args.eval_episodes, device,
                                f"videos/{run_name}/eval" if args.capture_video else None)
        log_evaluation(writer, eval_returns)
    writer.close()
    if args.track:
        wandb.finish()
    return agent


def log_evaluation(writer: SummaryWriter, eval_returns: np.ndarray) -> None:
    for episode, episode_return in enumerate(eval_returns):
        writer.add_scalar("eval/episodic_return", episode_return, episode)
    print(f"eval: mean return {eval_returns.mean():.2f} ± {eval_returns.std():.2f} "
          f"over {len(eval_returns)} episodes (greedy policy)")


def evaluate_saved_model(args: Args) -> Agent:
    """--eval-only: load a saved model, evaluate it, log to a new run directory."""
    device = get_device(args)
    probe_envs = make_envs(replace(args, num_envs=1))
    agent = Agent(probe_envs).to(device)
    probe_envs.close()
    try:
        agent.load_state_dict(torch.load(args.model_path, map_location=device, weights_only=True))
    except Exception as e:  # missing, truncated, foreign, for another env, or pickled code
        raise ConfigError(f"cannot load model {args.model_path} for {args.env_id}: {first_line(e)}") from None
    run_name = new_run_dir(replace(args, exp_name=f"{args.exp_name}-eval"))
    writer = SummaryWriter(f"runs/{run_name}")
    eval_returns = evaluate(agent, args, args.eval_episodes, device,
                            f"videos/{run_name}" if args.capture_video else None)
    log_evaluation(writer, eval_returns)
    writer.close()
    return agent


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        train(args)
    except (ConfigError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 1)
    except TrainingInterrupted as e:
        sys.exit(e.exit_code)
