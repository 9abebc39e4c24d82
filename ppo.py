"""Proximal Policy Optimization (PPO) in one file, for gymnasium 1.x vector envs.

Read it top to bottom: the flags (`Args`), the env factory (`make_envs`) and the agent (`Agent`), in
the order of CleanRL's ppo.py; then the advantage estimators (`compute_gae`, `compute_mc_returns`) and
the loss (`ppo_loss`), which CleanRL writes inline in its loop, here as functions defined before the
loop that calls them; then the training loop (`train`: ROLLOUT, ADVANTAGES, UPDATE, LOGGING), which
calls them where CleanRL has those lines. That is all of PPO. Below `train`, under one banner, sits
what a first reading skips (the banner lists it). Where a line departs from CleanRL's, a comment
beside it says what it stands for.

    python ppo.py --env-id CartPole-v1
    tensorboard --logdir runs

Paper: Schulman et al., "Proximal Policy Optimization Algorithms" (2017).
Details: Huang et al., "The 37 Implementation Details of Proximal Policy Optimization" (2022).
"""

import ast
import difflib
import glob
import importlib.util
import inspect
import math
import os
import random
import signal
import sys
import textwrap
import threading
import time
import typing
from dataclasses import asdict, dataclass, fields, make_dataclass, replace
from typing import Annotated, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
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
    torch_threads: int = 0
    """torch's CPU threads; 0: 1 for MLPs, the cores for a CNN (shared under torchrun), or OMP_NUM_THREADS if set"""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """under torchrun, the torch.distributed backend: auto is nccl with CUDA, gloo on the CPU"""
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
    """write the run's checkpoint.pt every this many iterations, at the end and on Ctrl-C or SIGTERM; 0: never"""
    resume: str | None = None
    """continue the run in this directory (or checkpoint) with its flags; those that reshape the run are refused"""
    eval_episodes: int = 0
    """after training, evaluate the greedy policy for this many episodes (`eval/episodic_return`)"""
    eval_only: bool = False
    """do not train: evaluate the --model-path model for --eval-episodes episodes (normalised as it was trained)"""
    model_path: str | None = None
    """the saved model (`.cleanrl_model`) that --eval-only evaluates"""

    # Algorithm specific arguments: CleanRL's ppo.py defaults; for Box actions a flag not given takes ppo_continuous_
    # action.py's value, shown as "Box:" (BOX_DEFAULTS), for images ppo_atari.py's, "images:" (IMAGE_DEFAULTS).
    env_id: str = "CartPole-v1"
    """the id of the environment (`module:Env-v0` imports `module` first to register it)"""
    preset: Literal["none", "tuned"] = "none"
    """tuned: the settings tuned for --env-id (PRESETS in ppo.py; the envs are listed above); flags given win"""
    total_timesteps: int = 500000
    """total timesteps of the experiments (under torchrun, of all processes together) (Box: 1000000) (images: 10000000)"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer (Box: 3e-4)"""
    num_envs: int = 4
    """the number of parallel game environments; under torchrun, of all processes together, split evenly (Box: 1) (images: 8)"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout (Box: 2048)"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    adv_estimator: Literal["gae", "mc"] = "gae"
    """the advantage estimator: `gae` (lambda-weighted TD errors) or `mc` (Monte-Carlo returns minus values)"""
    num_minibatches: int = 4
    """the number of mini-batches (Box: 32)"""
    update_epochs: int = 4
    """the K epochs to update the policy (Box: 10)"""
    norm_adv: bool = True
    """Toggles advantages normalization (per minibatch; under torchrun, over all processes' shares of it)"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient (images: 0.1)"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function (baselines' code; not in the PPO paper)"""
    ent_coef: float = 0.01
    """coefficient of the entropy (Box: 0.0)"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold (stop the update epochs early when exceeded)"""
    mask_actions: bool = True
    """Discrete, MultiDiscrete: never take an action the env masks (its info or Dict "action_mask"); off: ignore masks"""

    # The continuous-control details of Huang et al., with gymnasium's wrappers (any action space).
    norm_obs: bool = False
    """normalise observations (a Dict's float vectors) by their running mean and std, clip them to [-10, 10] (Box: True)"""
    norm_reward: bool = False
    """divide rewards by the running std of their discounted sum (gymnasium's NormalizeReward), clip to [-10, 10] (Box: True)"""
    clip_action: bool = True
    """Box actions: clip them to the action space's bounds when sending them to the env (they are stored unclipped)"""

    # The networks for vectors (CleanRL's: 2 hidden layers of 64, tanh, orthogonal init, log std 0); rl-zoo's need others.
    hidden_size: int = 64
    """the width of the actor's and the critic's two hidden layers"""
    activation: Literal["tanh", "relu"] = "tanh"
    """the activation after each hidden layer"""
    ortho_init: bool = True
    """orthogonal initialization of the actor's and critic's layers; off: torch's default init (SB3's ortho_init=False)"""
    log_std_init: float = 0.0
    """Box actions: the initial log std of the Gaussian policy (-2: std 0.14, rl-zoo's MuJoCo setting)"""
    recurrent: Literal["none", "lstm", "gru"] = "none"
    """a memory: an LSTM or GRU between the observation's features and the heads (Atari: then one frame, not 4)"""
    recurrent_size: int = 128
    """--recurrent: the size of its state (CleanRL's ppo_atari_lstm.py: 128)"""


# ppo_continuous_action.py's defaults where they differ from ppo.py's: a Box env's, for the flags not given.
BOX_DEFAULTS = dict(total_timesteps=1000000, learning_rate=3e-4, num_envs=1, num_steps=2048, num_minibatches=32,
                    update_epochs=10, ent_coef=0.0, norm_obs=True, norm_reward=True)
IMAGE_DEFAULTS = dict(total_timesteps=10000000, num_envs=8, clip_coef=0.1)  # ppo_atari.py's, for image observations


def make_envs(args: Args, num_envs: int, video_folder: str | None = None) -> gym.vector.VectorEnv:
    """`num_envs` copies of the env, stepped together (CleanRL: `make_env` thunks in a SyncVectorEnv)."""
    if is_atari(args.env_id):
        # CleanRL's Atari wrappers (below the banner); --recurrent: one frame a step, as ppo_atari_lstm.py
        envs = make_atari_envs(args.env_id, num_envs, video_folder, frames=4 if args.recurrent == "none" else 1)
    elif video_folder is None:
        # the env's own vector version where it has one (CartPole-v1's: all copies in numpy), else a Python env per copy
        envs = gym.make_vec(args.env_id, num_envs=num_envs)
    else:  # as CleanRL's make_env: env 0 records videos
        def make_env(i):
            if i == 0:
                return gym.wrappers.RecordVideo(gym.make(args.env_id, render_mode="rgb_array"), video_folder)
            return gym.make(args.env_id)

        envs = gym.vector.SyncVectorEnv([lambda i=i: make_env(i) for i in range(num_envs)])
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)  # CleanRL: one per env; first: the env's own rewards
    if is_atari(args.env_id):  # after the statistics, which log whole games and their raw scores
        envs = EndOfLifeAsTermination(envs, restart_action(args.env_id))  # CleanRL's EpisodicLifeEnv
        envs = gym.wrappers.vector.TransformReward(envs, np.sign)  # CleanRL's ClipRewardEnv
    envs = with_plain_spaces(envs, args.mask_actions)  # actions from 0, flat; Dict observations flat (below)
    # The continuous-control details: the env gets clipped actions (the agent stores its own), observations and
    # rewards normalised, then clipped to [-10, 10]: CleanRL's ClipAction, NormalizeObservation, TransformObservation
    # (np.clip), NormalizeReward, TransformReward(np.clip), as one layer (below), over all envs (CleanRL: per env).
    clip_action = isinstance(envs.single_action_space, gym.spaces.Box) and args.clip_action
    if clip_action or args.norm_obs or args.norm_reward:
        envs = ClipAndNormalize(envs, clip_action, args.norm_obs, args.norm_reward, gamma=args.gamma)
    return envs


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias: Huang et al.'s orthogonal initialization detail."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, envs: gym.vector.VectorEnv, hidden_size: int = 64, activation: str = "tanh",
                 ortho_init: bool = True, log_std_init: float = 0.0, recurrent: str = "none",
                 recurrent_size: int = 128):  # the flags of the same names
        super().__init__()
        obs_space, action_space = envs.single_observation_space, envs.single_action_space
        self.continuous = isinstance(action_space, gym.spaces.Box)
        self.action_logits = ActionLogits(obs_space, action_space)  # masks; MultiDiscrete's rows (below)
        # Discrete: one logit per action (MultiDiscrete: per choice, MultiBinary: per bit). Box: the mean of each dimension.
        n_outputs = action_space.shape[0] if self.continuous else self.action_logits.n_outputs
        if self.continuous:  # the Gaussian's log std: learned, not a function of the state (CleanRL: zeros)
            self.actor_logstd = nn.Parameter(torch.full((1, n_outputs), float(log_std_init)))
        if is_image(obs_space):  # images: CleanRL's ppo_atari.py agent, one CNN trunk under two linear heads
            self.trunk = NatureCNN(obs_space)
        else:  # vectors go to the actor and the critic as they are; Discrete, Dict, ...: as features (ObservationEncoder, below)
            self.trunk = nn.Identity() if isinstance(obs_space, gym.spaces.Box) else ObservationEncoder(obs_space)
        obs_size = obs_space.shape[0] if isinstance(self.trunk, nn.Identity) else self.trunk.out_features
        # --recurrent: an LSTM or GRU over each env's features, step after step (RecurrentLayer, below); None without
        self.recurrent = None if recurrent == "none" else RecurrentLayer(recurrent, obs_size, recurrent_size)
        if self.recurrent is not None:
            obs_size = recurrent_size  # the heads read its output
        if is_image(obs_space):
            self.critic = layer_init(nn.Linear(obs_size, 1), std=1.0)
            self.actor = layer_init(nn.Linear(obs_size, n_outputs), std=0.01)
            return
        Activation = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]  # CleanRL: 64, nn.Tanh
        # Separate actor and critic: on small control tasks a shared trunk makes the value and policy losses fight
        self.critic = nn.Sequential(
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
        if not ortho_init:  # SB3's ortho_init=False: every layer back to torch's default (uniform) init
            for layer in self.modules():
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def initial_memory(self, num_envs: int) -> "RecurrentMemory":
        """--recurrent: each env's state where an episode starts (zeros); without it, an empty memory."""
        return RecurrentMemory(() if self.recurrent is None else self.recurrent.zero_state(num_envs))

    def features(self, x: torch.Tensor, memory=None) -> torch.Tensor:
        """The trunk's features; with --recurrent, through the recurrent layer, from each env's state in memory."""
        hidden = self.trunk(x)
        return hidden if self.recurrent is None else self.recurrent(hidden, memory)

    def get_value(self, x: torch.Tensor, memory=None) -> torch.Tensor:
        return self.critic(self.features(x, memory)).squeeze(-1)  # (batch,); CleanRL keeps (batch, 1) and flattens later

    def get_action(self, x: torch.Tensor, memory=None) -> torch.Tensor:
        """Sample actions and nothing else: all the rollout needs at each step."""
        return self.sample(self.actor(self.features(x, memory)), x)

    def sample(self, actor_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Actions drawn from the policy that the actor's outputs (batch, n_actions) or (batch, action_dim) give."""
        if self.continuous:  # = Normal(actor_out, self.actor_logstd.exp()).sample()
            return actor_out + self.actor_logstd.exp() * torch.randn_like(actor_out)
        # = Categorical(logits=logits).sample(), by the Gumbel-max trick: argmax(logits - log E),
        # E ~ Exponential(1), is a sample from softmax(logits) (docs/tutorial.md, section 2), in fewer ops.
        logits = self.action_logits(actor_out, x)
        return torch.argmax(logits - torch.empty_like(logits).exponential_().log(), dim=-1)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None, memory=None):
        """Score the given actions (or sample new ones): (action, log_prob, entropy, value), each (batch,) (Box actions: (batch, action_dim))."""
        hidden = self.features(x, memory)  # images: the CNN's features, computed once for both heads
        if action is None:
            action = self.sample(self.actor(hidden), x)
        actor_out = self.actor(hidden)
        if self.continuous:
            # = Normal(mean, std).log_prob(action).sum(-1) and .entropy().sum(-1): independent dimensions add up
            log_std = self.actor_logstd.expand_as(actor_out)
            log_prob = (-0.5 * ((action - actor_out) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
        else:
            # = Categorical(logits=logits).log_prob(action) and .entropy(), written out (fewer ops)
            log_probs = F.log_softmax(self.action_logits(actor_out, x), dim=-1)
            log_prob = log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)  # (MultiBinary's are int8)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            if self.action_logits.per_dimension:  # independent dimensions: log-probs and entropies add up
                log_prob, entropy = log_prob.sum(-1), entropy.sum(-1)
        return action, log_prob, entropy, self.critic(hidden).squeeze(-1)

    def get_greedy_action(self, x: torch.Tensor, memory=None) -> torch.Tensor:
        """The most probable action (the mean, for Box): for evaluation, where exploring only adds noise."""
        actor_out = self.actor(self.features(x, memory))
        return actor_out if self.continuous else self.action_logits(actor_out, x).argmax(-1)


def compute_gae(rewards, values, next_value, terminations, truncations, gamma, gae_lambda):
    """Generalized Advantage Estimation (Schulman et al., 2016), backwards through the rollout.

    Numpy arrays, (num_steps, num_envs), except next_value (num_envs,): V of the observation after
    the rollout. values[t + 1] (next_value at the last step) is the V_{t+1} that bootstraps step t.

        delta_t = r_t + gamma * (1 - terminated_t) * V_{t+1} - V_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}

    CleanRL's loop, name by name: dones[t] here is its dones[t + 1] (a step's flags are stored with the step that
    produced them), decays[t] is gamma * gae_lambda * nextnonterminal, last_advantage is lastgaelam. One change:
    CleanRL's delta multiplies V_{t+1} by nextnonterminal, so a time-limit truncation counts as a termination.
    Here only a termination has no future: after a truncation, V_{t+1} is V(final observation), NEXT_STEP's (Pardo 2018).
    """
    terminations, truncations = terminations.astype(np.float32), truncations.astype(np.float32)
    dones = np.maximum(terminations, truncations)
    next_values = np.concatenate([values[1:], next_value[None]])  # V_{t+1}: CleanRL's nextvalues
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values
    decays = gamma * gae_lambda * (1.0 - dones)
    advantages = np.zeros_like(rewards)
    last_advantage = np.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        advantages[t] = last_advantage = deltas[t] + decays[t] * last_advantage
    return advantages


def compute_mc_returns(rewards, values, next_value, terminations, truncations, gamma):
    """Monte-Carlo (discounted) returns, backwards through the rollout; arrays as in compute_gae.

        G_t = r_t + gamma * ((1 - done_t) * G_{t+1} + (1 - terminated_t) * truncated_t * V_{t+1})

    Where the rollout cuts an episode, the return after the last step is next_value; a truncated episode ends with
    the value of its final observation. Terminated and truncated at once (the pole falls on the time limit's step): no future.
    """
    terminations, truncations = terminations.astype(np.float32), truncations.astype(np.float32)
    dones = np.maximum(terminations, truncations)
    truncations = truncations * (1.0 - terminations)
    next_values = np.concatenate([values[1:], next_value[None]])
    returns = np.zeros_like(rewards)
    next_return = next_value
    for t in reversed(range(len(rewards))):
        returns[t] = next_return = rewards[t] + gamma * ((1.0 - dones[t]) * next_return + truncations[t] * next_values[t])
    return returns


def ppo_loss(agent, obs, actions, old_logprobs, old_values, advantages, returns, args, memory=None):
    """The clipped-surrogate PPO loss on one minibatch: (loss, dict of detached statistics). CleanRL's lines
    from its update loop, in the same order (mb_advantages is `advantages` here), as a function tests check."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(obs, actions, memory)  # (--recurrent: replayed)
    logratio = newlogprob - old_logprobs
    ratio = logratio.exp()

    with torch.no_grad():
        # calculate approx_kl http://joschu.net/blog/kl-approx.html: -log r and (r - 1) - log r both estimate
        # KL(old || new) without bias on the old policy's actions; the second has lower variance, never < 0
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

    if args.norm_adv:  # = (advantages - advantages.mean()) / (advantages.std() + 1e-8); torchrun: over all processes' shares
        mean, std = mean_and_std_over_processes(advantages)
        advantages = (advantages - mean) / (std + 1e-8)

    # Policy loss: maximise min(r * A, clip(r, 1 - eps, 1 + eps) * A), written as a minimisation
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss, optionally clipped around the rollout's value, like the policy
    if args.clip_vloss:
        v_loss_unclipped = (newvalue - returns) ** 2
        v_clipped = old_values + torch.clamp(newvalue - old_values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    stats = dict(policy_loss=pg_loss.detach(), value_loss=v_loss.detach(), entropy=entropy_loss.detach(),
                 old_approx_kl=old_approx_kl, approx_kl=approx_kl, clipfrac=clipfrac)
    return loss, stats


def train(args: Args) -> Agent:
    run = open_run(args)  # checks flags and env, joins torchrun's processes, makes (or reopens) runs/{run_name}
    args = run.args
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size
    # Under torchrun, each of world_size processes (ranks) steps its share of the envs, and of each minibatch.
    num_envs = args.num_envs // run.world_size

    # TRY NOT TO MODIFY: seeding. Under torchrun each process (rank) draws its own numbers: its own action noise.
    random.seed(args.seed + run.rank)
    np.random.seed(args.seed + run.rank)
    torch.manual_seed(args.seed + run.rank)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    envs = make_envs(args, num_envs, f"videos/{run.name}" if args.capture_video and run.rank == 0 else None)
    torch.set_num_threads(torch_threads(args, envs.single_observation_space))  # not in CleanRL: 1 for MLPs, the cores for a CNN
    agent = Agent(envs, args.hidden_size, args.activation, args.ortho_init, args.log_std_init, args.recurrent,
                  args.recurrent_size).to(device)
    optimizer = ClippedAdam(agent.parameters(), lr=args.learning_rate, eps=1e-5, max_grad_norm=args.max_grad_norm)
    # = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5), with CleanRL's
    #   nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm) inside its step() (ClippedAdam, below)
    start_iteration = restore_checkpoint(run, agent, optimizer, envs)  # 0, or the iteration a resumed run reached
    broadcast_weights(agent)  # torchrun: every process starts from rank 0's weights
    writer = open_writer(run, start_iteration * batch_size)  # TensorBoard in runs/{run_name}, the flags as a table

    # ALGO Logic: Storage setup, (num_steps, num_envs, ...), in numpy, as the env gives and takes them
    # (CleanRL: torch tensors on the device). The batch goes to the device once, after the rollout.
    obs = observation_storage(envs.single_observation_space, (args.num_steps, num_envs))  # images stay bytes, floats float32
    actions = np.zeros((args.num_steps, num_envs) + envs.single_action_space.shape,
                       dtype=envs.single_action_space.dtype)  # int64 for Discrete: CleanRL's floats needed .long()
    rewards = np.zeros((args.num_steps, num_envs), dtype=np.float32)
    # CleanRL keeps only dones; terminations and truncations apart let a truncation be bootstrapped (compute_gae)
    terminations = np.zeros((args.num_steps, num_envs), dtype=bool)
    truncations = np.zeros((args.num_steps, num_envs), dtype=bool)
    resets = np.zeros((args.num_steps, num_envs), dtype=bool)  # CleanRL's `dones`, repurposed (ROLLOUT)

    # TRY NOT TO MODIFY: start the game
    global_step = start_step = start_iteration * batch_size
    start_time = time.time()
    # Seeded from seed + the index of this process's first env among all processes' envs: envs of one
    # Python env per copy seed copy i with seed + i, as one process would; an env's own vector version
    # (CartPole's) seeds all its copies from one generator, so there the start differs from one
    # process's, though no two processes share a seed. A resumed run starts from new seeds.
    next_obs, _ = envs.reset(seed=args.seed + start_iteration * args.num_envs + run.rank * num_envs)
    next_done = np.zeros(num_envs, dtype=bool)
    memory = agent.initial_memory(num_envs)  # --recurrent: each env's state, zeros (RecurrentMemory, below); else empty
    episode_returns = []  # every finished episode's return, for the console

    # Ctrl-C or SIGTERM sets stop.signum: the iteration ends, then the run. (The writer is closed, its
    # logs flushed, however the loop ends.)
    with stop_on_signal() as stop, writer:
        for iteration in range(start_iteration + 1, num_iterations + 1):
            # Annealing the rate if instructed to do so: linearly toward 0 over training
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # ROLLOUT: num_steps steps in every env with the current policy, which only acts here
            # (inference mode: no autograd bookkeeping at all). Gymnasium 1.x resets a finished env on
            # its next step (NEXT_STEP autoreset): that step ignores the action and returns reward 0
            # and the new episode's first observation. It is no transition: `resets` marks it, and
            # the update leaves it out.
            episodes = []  # (global_step, return, length) of each episode that ends
            rollout_memory = memory.copy()  # --recurrent: where the update replays each env's rollout from
            with torch.inference_mode():
                for step in range(args.num_steps):
                    global_step += args.num_envs
                    obs[step] = next_obs
                    resets[step] = next_done
                    # log-probs and values come after the rollout, batched
                    action = agent.get_action(as_tensor(next_obs, device), memory)  # = torch.as_tensor(next_obs, ...)
                    memory.forget(next_done)  # --recurrent: after a reset step, the new episode's state starts at zeros
                    actions[step] = action = action.cpu().numpy()  # the env takes numpy

                    next_obs, reward, terminated, truncated, infos = envs.step(action)
                    rewards[step], terminations[step], truncations[step] = reward, terminated, truncated
                    next_done = terminated | truncated
                    if "episode" in infos:  # RecordEpisodeStatistics, on the step that ends an episode
                        for i in np.flatnonzero(infos["_episode"]):
                            episodes.append((global_step, infos["episode"]["r"][i], infos["episode"]["l"][i]))

            # The rollout policy's log-probs and values of all its steps, in one call: the weights did
            # not move during the rollout, so these are the numbers CleanRL computes step by step in it.
            b_obs = as_tensor(obs, device, flatten_steps=True)  # = torch.as_tensor(obs.reshape((-1,) + shape), ...)
            b_actions = torch.as_tensor(actions.reshape((-1,) + envs.single_action_space.shape), device=device)
            # no_grad, not inference mode: these enter the loss, and an edit that saves one for backward
            # (ratio * old_logprobs, say) would fail on an inference tensor
            with torch.no_grad():  # (--recurrent: replaying each env's rollout from rollout_memory)
                _, b_logprobs, _, b_values = agent.get_action_and_value(b_obs, b_actions, rollout_memory.replay(resets))
                # bootstraps the steps after the rollout
                next_value = agent.get_value(as_tensor(next_obs, device), memory.copy())

            # ADVANTAGES, backwards through the rollout, in numpy (128 tiny steps: cheaper than torch ops)
            values = b_values.cpu().numpy().reshape(args.num_steps, num_envs)
            next_value = next_value.cpu().numpy()
            if args.adv_estimator == "gae":
                advantages = compute_gae(rewards, values, next_value, terminations, truncations,
                                         args.gamma, args.gae_lambda)
                returns = advantages + values
            else:
                returns = compute_mc_returns(rewards, values, next_value, terminations, truncations, args.gamma)
                advantages = returns - values
            b_advantages = torch.as_tensor(advantages.reshape(-1), device=device)
            b_returns = torch.as_tensor(returns.reshape(-1), device=device)

            # UPDATE: optimizing the policy and value network, on the real transitions only
            b_inds = np.flatnonzero(~resets.reshape(-1))  # CleanRL: np.arange(args.batch_size)
            update_stats = []
            for epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                # CleanRL: b_inds[start:end] in steps of batch_size // num_minibatches, which needs a batch that
                # divides; the real transitions rarely do, and array_split's sizes differ by 1 at most
                # (509 into 4: 128, 127, 127, 127, where slices of 127 would leave a fifth minibatch of 1)
                if args.recurrent == "none":
                    minibatches = [(mb_inds, None) for mb_inds in np.array_split(b_inds, args.num_minibatches)]
                else:  # whole envs' real steps, each replayed from the rollout's start (ppo_atari_lstm.py's envsperbatch)
                    minibatches = rollout_memory.minibatches(resets, args.num_minibatches)
                for mb_inds, mb_memory in minibatches:
                    mb_inds = torch.as_tensor(mb_inds, device=device)
                    loss, stats = ppo_loss(agent, b_obs[mb_inds], b_actions[mb_inds], b_logprobs[mb_inds],
                                           b_values[mb_inds], b_advantages[mb_inds], b_returns[mb_inds], args, mb_memory)
                    optimizer.zero_grad()
                    loss.backward()
                    all_reduce_gradients(agent, len(mb_inds))  # torchrun: the whole minibatch's gradient, in every process
                    optimizer.step()  # = nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm); step()
                    update_stats.append(stats)
                if args.target_kl is not None and mean_over_processes(stats["approx_kl"]) > args.target_kl:
                    break
            stats = {name: torch.stack([s[name] for s in update_stats]) for name in stats}  # (updates,) each
            check_finite(iteration, stats, agent)  # a NaN stops the run here, before it reaches a checkpoint

            # LOGGING, once per iteration: the last minibatch's statistics (clipfrac: the mean), as CleanRL
            for episode_step, episode_return, episode_length in gather_episodes(episodes):  # torchrun: all ranks'
                writer.add_scalar("charts/episodic_return", episode_return, episode_step)
                writer.add_scalar("charts/episodic_length", episode_length, episode_step)
                episode_returns.append(float(episode_return))
            y_pred, y_true = values.reshape(-1)[b_inds], returns.reshape(-1)[b_inds]  # CleanRL: all steps; here real ones
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            logged = {name: value[-1].item() for name, value in stats.items()}
            logged["clipfrac"] = stats["clipfrac"].mean().item()
            for name, value in logged.items():
                writer.add_scalar(f"losses/{name}", value, global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            sps = int((global_step - start_step) / (time.time() - start_time))  # CleanRL: global_step; a resume starts later
            writer.add_scalar("charts/SPS", sps, global_step)
            # CleanRL prints each episode's return and the SPS every iteration; here one line, 20 times a run
            if iteration % max(1, num_iterations // 20) == 0 or iteration == num_iterations:
                print_progress(global_step, num_iterations * batch_size, episode_returns, sps, time.time() - start_time)
            if args.checkpoint_every and iteration % args.checkpoint_every == 0:
                save_checkpoint(run, iteration, agent, optimizer, envs)
            if stop.requested():  # Ctrl-C or SIGTERM, in any process: finish_run checkpoints and exits 130 / 143
                break

        finish_run(run, writer, global_step // batch_size, agent, optimizer, envs, stop)  # checkpoint, model, eval
    return agent


# ==================================================================================================
# Plumbing: what a first reading skips, one concern a section, in this order:
#   the optimizer           ClippedAdam (torch.optim.Adam + clip_grad_norm_, over one flat vector)
#   errors                  ConfigError (exit 2), TrainingError (exit 1), TrainingInterrupted (130 / 143)
#   presets, command line   PRESETS, FLAG_GROUPS (--help), parse_args, with_env_defaults (Args from Python), probe_env
#   Atari and images        register_minatar, make_atari_envs, EndOfLifeAsTermination, NatureCNN (the Agent's trunk)
#   any gymnasium space     with_plain_spaces, PartsObservation, ObservationEncoder, ActionLogits
#   memory (--recurrent)    RecurrentLayer (the Agent's LSTM or GRU), RecurrentMemory (each env's state, the replays)
#   continuous control      ClipAndNormalize (gymnasium's action clip and normalisation wrappers, as one layer)
#   checking the flags      check_args, check_renders
#   the run                 Run, open_run (checks, joins torchrun, makes or reopens runs/{name}), open_writer,
#                           torch_threads (1 for an MLP, the cores for a CNN)
#   checkpoints, resume     save_checkpoint, load_checkpoint, restore_checkpoint, the env statistics
#   Ctrl-C and SIGTERM      stop_on_signal (the loop stops), exit_if_stopped (the run exits 130 / 143)
#   torchrun                process_rank, join_processes, restart recovery, the collectives
#   the end of a run        check_finite, print_progress, finish_run, evaluate, evaluate_saved_model, main
# ==================================================================================================


class ClippedAdam:
    """= optim.Adam(params, lr, eps), with nn.utils.clip_grad_norm_(params, max_grad_norm) before each step.

    The same update (a test checks it against both): with g the gradient, clipped to a global norm
    of max_grad_norm, and t the number of steps taken,
        m = beta1 * m + (1 - beta1) * g,      v = beta2 * v + (1 - beta2) * g^2
        theta -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    computed over one flat vector of all the parameters: at these sizes each torch op costs its
    call overhead, not its arithmetic, and clipping plus torch.optim's Adam run several ops per
    parameter tensor where this runs about a dozen on the flat vector, after one flatten (a view) per
    gradient. At its first step the parameters become
    views into that vector, so the update writes them all at once. It also skips torch.optim's
    import of torch._dynamo (about 1 s of start-up). docs/speed.md has the measured figures.

    Like torch.optim: `param_groups[0]["lr"]` is the learning rate, `zero_grad()` clears the
    gradients, a parameter without a gradient (an unused or a frozen layer) is left as it is, and
    the model may be moved before the first step. A parameter listed twice counts once (torch.optim
    warns and steps it twice; a shared layer's are listed once by .parameters() anyway). Unlike it, the parameters with a gradient must stay the same, and the model where
    it was, after the first step: otherwise step() says so, rather than train a model it no
    longer holds.
    """

    def __init__(self, params, lr: float, eps: float = 1e-8, max_grad_norm: float = math.inf, betas=(0.9, 0.999)):
        self.params = list(dict.fromkeys(params))  # a shared parameter, listed twice, counts once
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.eps, self.betas, self.max_grad_norm = eps, betas, max_grad_norm
        self.flat_params = None  # every parameter, one vector; made at the first step
        self.exp_avg = self.exp_avg_sq = None  # m and v, vectors like flat_params
        self.has_grad = None  # which parameters have gradients, fixed by the first step
        self.steps_taken = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        has_grad = [p.grad is not None for p in self.params]
        if self.flat_params is None:
            self._start(has_grad)
        if has_grad != self.has_grad:
            raise TrainingError("the parameters with a gradient changed after the optimizer's first step (a layer "
                                "frozen, unfrozen or replaced mid-run?): build the optimizer after such edits, or use "
                                "torch.optim, which allows them")
        if [p.data_ptr() for p in self.params] != self.data_ptrs:
            raise TrainingError("the model's parameters were moved or replaced after the optimizer's first step "
                                "(.to(), .double(), load_state_dict(assign=True)?): do that before training starts")
        grad = torch.cat([p.grad.flatten() if g else zeros for p, g, zeros in zip(self.params, has_grad, self.zeros)])
        grad *= (self.max_grad_norm / (grad.norm() + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s formula
        self.steps_taken += 1
        beta1, beta2 = self.betas
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.exp_avg_sq / (1 - beta2 ** self.steps_taken)).sqrt_().add_(self.eps)
        # Without a gradient, m = v = 0 and the update is 0: those parameters do not move.
        self.flat_params.addcdiv_(self.exp_avg, denom, value=-self.param_groups[0]["lr"] / (1 - beta1 ** self.steps_taken))

    def _start(self, has_grad: list) -> None:
        if not any(has_grad):
            raise TrainingError("no parameter of the optimizer has a gradient: were they replaced after it was built?")
        if self.has_grad is not None and has_grad != self.has_grad:  # a loaded state, for other parameters
            raise TrainingError("the parameters with a gradient are not those of the optimizer state loaded from the "
                                "checkpoint (a layer frozen or unfrozen since?): start a new run")
        self.has_grad = has_grad
        self.flat_params = torch.cat([p.detach().flatten() for p in self.params])
        offset = 0
        for p in self.params:  # each parameter becomes a view into flat_params
            p.data = self.flat_params[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        self.data_ptrs = [p.data_ptr() for p in self.params]
        self.zeros = [torch.zeros_like(p).flatten() for p in self.params]  # the gradient of a parameter without one
        for name in ("exp_avg", "exp_avg_sq"):  # zeros, or the state loaded from a checkpoint
            state = getattr(self, name)
            setattr(self, name, torch.zeros_like(self.flat_params) if state is None else state.to(self.flat_params))

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps_taken": self.steps_taken,
                "has_grad": self.has_grad, "lr": self.param_groups[0]["lr"]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("has_grad") is not None and len(state["has_grad"]) != len(self.params):
            raise ValueError(f"the state is for {len(state['has_grad'])} parameter tensors, "
                             f"this optimizer has {len(self.params)}")
        size = sum(p.numel() for p in self.params)
        if state["exp_avg"] is not None and state["exp_avg"].numel() != size:
            raise ValueError(f"the state holds {state['exp_avg'].numel()} values, the parameters {size}")
        self.exp_avg, self.exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        self.steps_taken, self.param_groups[0]["lr"] = state["steps_taken"], state["lr"]
        if self.flat_params is None:
            self.has_grad = state["has_grad"]  # checked by the first step
        else:
            self.exp_avg, self.exp_avg_sq = self.exp_avg.to(self.flat_params), self.exp_avg_sq.to(self.flat_params)


class ConfigError(ValueError):
    """Bad flags, env or checkpoint: reported as one line, exit code 2, before anything is written."""


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an unwritable checkpoint): reported as one line, exit code 1."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training (after a checkpoint, unless --checkpoint-every 0)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


# --preset tuned: settings tuned on a 2-core machine for these envs (docs/presets.md has the results and
# the command that reproduces them). Plain data: edit a value, or add an env. Flags given still win.
PRESETS = {
    # rl-baselines3-zoo's: short rollouts of 8 envs, one minibatch of 256 reused for 20 epochs, a
    # shorter horizon (gamma 0.98, lambda 0.8), no entropy bonus; and SB3's unclipped value loss
    # (greedy eval 500 for seeds 1-10 without the clip; 499.39 with it, seed 1 at 498). 100k steps.
    "CartPole-v1": dict(total_timesteps=100_000, num_envs=8, num_steps=32, num_minibatches=1, update_epochs=20,
                        learning_rate=1e-3, gamma=0.98, gae_lambda=0.8, ent_coef=0.0, clip_vloss=False),
    # rl-zoo's: normalised observations and rewards, 16 envs x 256 steps, minibatches of 64; SB3's
    # constant learning rate and unclipped value loss; and 10 epochs, not 4 (greedy eval -67.6, not -74.0).
    "Acrobot-v1": dict(total_timesteps=1_000_000, norm_obs=True, norm_reward=True, num_envs=16, num_steps=256,
                       num_minibatches=64, update_epochs=10, learning_rate=3e-4, anneal_lr=False, clip_vloss=False,
                       gae_lambda=0.94, ent_coef=0.0),
    # rl-zoo's: normalised observations (the car's position and speed have tiny scales) and rewards,
    # many short rollouts (16 envs x 16 steps), a long horizon (lambda 0.98), SB3's constant learning
    # rate and unclipped value loss; and 10 epochs rather than 4 (training -100 against -114).
    "MountainCar-v0": dict(total_timesteps=1_000_000, norm_obs=True, norm_reward=True, num_envs=16, num_steps=16,
                           num_minibatches=4, update_epochs=10, learning_rate=3e-4, anneal_lr=False,
                           clip_vloss=False, gae_lambda=0.98, ent_coef=0.0),
    # rl-zoo's: long rollouts (16 envs x 1024 steps), minibatches of 64, gamma 0.999 (landing pays late);
    # and SB3's constant learning rate and unclipped value loss: returns here run to the hundreds, and
    # a value clipped to move 0.2 an update learns them too slowly (eval 187 with the clip, 261 without).
    "LunarLander-v3": dict(total_timesteps=1_000_000, num_envs=16, num_steps=1024, num_minibatches=256,
                           update_epochs=4, learning_rate=3e-4, anneal_lr=False, clip_vloss=False, gamma=0.999,
                           gae_lambda=0.98, ent_coef=0.01),
    # CleanRL's defaults but a learning rate 4x larger (1e-3) and 8 envs, for 500k steps: with the 500 one-hot
    # states, 300k steps at the defaults ended far from a delivery (exact value -164 to -190, seeds 1-3); these
    # reach 7.60, 7.64, 7.33 (the optimum: 7.93; docs/spaces.md). The action mask (Taxi's info) is used.
    "Taxi-v4": dict(total_timesteps=500_000, learning_rate=1e-3, num_envs=8),
    # CleanRL's defaults but a learning rate of 1e-3, 8 envs and 5x the entropy bonus (0.05), 300k steps: at the
    # defaults seed 3 settled on a policy that reaches the goal 19% of the time (seeds 1-2: 73%; the best policy:
    # 74%); 16 envs alone moved the failure to seed 1 (60%). These: 73-74% on each of seeds 1-5 (docs/spaces.md).
    "FrozenLake-v1": dict(total_timesteps=300_000, learning_rate=1e-3, num_envs=8, ent_coef=0.05),
    # CleanRL's continuous defaults, but 8 envs x 256 steps (the same batch of 2048 from 8 swings at once)
    # and 300k steps: greedy eval -164 (-151 at 600k). rl-zoo's gamma 0.9, lr 1e-3 (without its gSDE): -170 at 600k.
    "Pendulum-v1": dict(total_timesteps=300_000, num_envs=8, num_steps=256),
    # CleanRL's continuous defaults (normalised observations and rewards), but 4 envs x 512 steps: with one
    # env, 2 seeds of 3 never found the flag and settled on standing still; 4 envs explore 4 ways at once.
    # And a wider first policy (log std 0.5: std 1.65, most actions pushed to the bounds), which reaches
    # the flag before the action cost teaches it to stand still: seeds 4-10 7 of 7 (log std 0: 5 of 7).
    "MountainCarContinuous-v0": dict(total_timesteps=100_000, num_envs=4, num_steps=512, log_std_init=0.5),
    # rl-zoo's (its 5819 on v3): one env x 512 steps, minibatches of 64 reused for 20 epochs, a small
    # constant lr, clip 0.1; 256x256 ReLU networks, torch's init; SB3's unclipped value loss, and its vf
    # 0.58096 doubled (SB3's value loss has no 0.5 in front). But lr 3e-5 (rl-zoo: 2.06e-5), gamma 0.99
    # (0.98) and log std -1 (-2), where rl-zoo's greedy cheetah got stuck nose-up on seed 3; and lambda 0.95
    # (0.92): the one setting tried past 5819 on each of seeds 1-3 (seed 4: 5767); docs/presets.md has the screens.
    "HalfCheetah-v5": dict(num_steps=512, num_minibatches=8, update_epochs=20, learning_rate=3e-5,
                           anneal_lr=False, gamma=0.99, gae_lambda=0.95, clip_coef=0.1, ent_coef=0.000401762,
                           vf_coef=2 * 0.58096, max_grad_norm=0.8, clip_vloss=False, hidden_size=256,
                           activation="relu", ortho_init=False, log_std_init=-1.0),
    # CleanRL's continuous defaults (BOX_DEFAULTS), which already beat its published v4 figures here.
    "Hopper-v5": dict(),
    # CleanRL's continuous defaults, but 8 envs x 256 steps (the same batch of 2048, from 8 walkers at once):
    # with one env, seed 1 stalled near a training return of 1,400 (greedy 1445); rl-zoo's settings did worse.
    "Walker2d-v5": dict(num_envs=8, num_steps=256),
    # MinAtar's games (minatar 1.0.15: sticky actions 0.1, no time limit), on the small CNN: gymnax-blines'
    # PPO settings for them (64 envs x 128 steps, 4 epochs, lr 5e-4, clip 0.2, gamma 0.999, lambda 0.95), but
    # with CleanRL's annealed learning rate (gymnax: constant after a 5% warm-up; constant, Breakout's seed 2
    # ended at 21.7 and SpaceInvaders' seed 1 at 121.6, under the figures of 28 and 131) and minibatches of 64,
    # not 1,024: at 128 seed 2 ended at 21.9, at 64 at 43.9 (about 1.5x the wall time). docs/atari.md has the screens.
    "MinAtar/Breakout-v1": dict(total_timesteps=10_000_000, num_envs=64, num_steps=128, num_minibatches=128,
                                update_epochs=4, learning_rate=5e-4, clip_coef=0.2, gamma=0.999, gae_lambda=0.95),
    # The same, but minibatches of 256, a quarter of Breakout's optimizer steps: already twice as far as at
    # 1,024 (seed 1: 92.6 at 2M, against 47.0), and past 131 on seeds 1-5.
    "MinAtar/SpaceInvaders-v1": dict(total_timesteps=10_000_000, num_envs=64, num_steps=128, num_minibatches=32,
                                     update_epochs=4, learning_rate=5e-4, clip_coef=0.2, gamma=0.999,
                                     gae_lambda=0.95),
    # CleanRL's continuous defaults with Walker2d's 8 envs x 256 steps, and a narrower first policy (log std
    # -1: std 0.37, not 1): screened on seed 1, greedy eval 686 (defaults), 701 (8 envs), 1162 (and log std -1).
    "Ant-v5": dict(num_envs=8, num_steps=256, log_std_init=-1.0),
}


def tuned_preset(env_id: str) -> dict:
    """The flag values of --preset tuned for env_id (PRESETS), or a one-line error for an env without one."""
    if env_id not in PRESETS:
        raise ConfigError(f"no tuned preset for {env_id}; there are presets for {', '.join(PRESETS)}")
    return PRESETS[env_id]


# The groups `python ppo.py --help` shows the flags in, each under a line that says what they share.
# Args itself stays flat, as CleanRL's (args.gamma): read_flags reads the command line through them.
FLAG_GROUPS = {
    "run": ("the run's name and seed, its devices, and what it logs",
            ("exp_name", "seed", "torch_deterministic", "cuda", "torch_threads", "backend", "track",
             "wandb_project_name", "wandb_entity", "capture_video")),
    "algorithm": (f"CleanRL's ppo.py defaults; for a Box action space a flag not given takes ppo_continuous_action.py's "
                  f"value, shown as Box: (BOX_DEFAULTS), for images ppo_atari.py's, shown as images: (IMAGE_DEFAULTS). "
                  f"--preset tuned knows {', '.join(PRESETS)}.",
                  ("env_id", "preset", "total_timesteps", "learning_rate", "num_envs", "num_steps", "anneal_lr", "gamma",
                   "gae_lambda", "adv_estimator", "num_minibatches", "update_epochs", "norm_adv", "clip_coef",
                   "clip_vloss", "ent_coef", "vf_coef", "max_grad_norm", "target_kl", "mask_actions")),
    "continuous-control": ("the continuous-control details of Huang et al. (2022), through gymnasium's wrappers "
                           "(any action space)", ("norm_obs", "norm_reward", "clip_action")),
    "networks": ("the actor's and the critic's MLPs for vector observations (images get the Nature CNN instead), "
                 "and a memory under both", 
                 ("hidden_size", "activation", "ortho_init", "log_std_init", "recurrent", "recurrent_size")),
    "checkpoints": ("checkpoints, resume, the saved model and its evaluation",
                    ("save_model", "checkpoint_every", "resume", "eval_episodes", "eval_only", "model_path")),
}


def parse_args(argv: list[str] | None = None) -> Args:
    """The flags of a command line (sys.argv when None), over the defaults the env or the run gives.

    The flags given always win. The others take CleanRL's ppo.py defaults (the values in Args),
    BOX_DEFAULTS for a Box action space, then the env's preset with --preset tuned (PRESETS); or
    with --resume the resumed run's own values. So tyro reads the command line twice: once for the
    env, preset and run it names, then again over the defaults those give. (A resumed run's
    checkpoint is read here for its flags, and again by open_run for its state.)
    From Python, `parse_args(["--env-id", "Pendulum-v1"])` gives the Args the command line would.
    """
    args = read_flags(argv, Args())  # what was asked: which env, which preset, which run to resume
    if args.resume:
        saved = load_checkpoint(args.resume)["args"]
        defaults = replace(Args(), **{f.name: saved[f.name] for f in fields(Args) if f.name in saved})
    else:
        defaults = replace(Args(), **preset_values(args.env_id, args.preset))
    args = read_flags(argv, defaults)  # the same flags, over those defaults
    args.preset_applied = True  # for with_env_defaults: a flag given here wins even where it equals CleanRL's value
    return args


def read_flags(argv: list[str] | None, defaults: Args) -> Args:
    """tyro.cli(Args, args=argv, default=defaults), with --help in FLAG_GROUPS' groups: tyro groups the
    flags of nested dataclasses, so it reads one made of a dataclass per group (each field with Args'
    type, and its docstring as help), without the groups' prefixes (--gamma, not --algorithm.gamma)."""
    types, helps = typing.get_type_hints(Args), field_docstrings(Args)
    grouped = {n for _, names in FLAG_GROUPS.values() for n in names}
    more = tuple(f.name for f in fields(Args) if f.name not in grouped)  # a field you add to Args, say
    if grouped - set(types):  # a field renamed or removed in Args, not in FLAG_GROUPS
        raise ConfigError(f"FLAG_GROUPS names {', '.join(sorted(grouped - set(types)))}, which Args has not: edit FLAG_GROUPS")
    all_groups = dict(FLAG_GROUPS, more=("fields of Args that FLAG_GROUPS does not name", more)) if more else FLAG_GROUPS
    groups = {}
    for name, (description, names) in all_groups.items():
        name = name.replace("-", "_")  # a field's name; tyro shows it as continuous-control again
        group = make_dataclass(name, [(n, Annotated[types[n], tyro.conf.arg(help=helps.get(n))]) for n in names])
        group.__doc__ = description
        groups[name] = group(**{n: getattr(defaults, n) for n in names})
    Flags = make_dataclass("Flags", [(name, type(group)) for name, group in groups.items()])
    flags = tyro.cli(Flags, args=argv, default=Flags(**groups), config=(tyro.conf.OmitArgPrefixes,),
                     description=__doc__.split("\n\n")[0])
    return Args(**{n: v for name in groups for n, v in asdict(getattr(flags, name)).items()})


def field_docstrings(cls) -> dict[str, str]:
    """Each field's docstring (the string below it in the class body), as tyro reads them for --help."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {line.target.id: " ".join(after.value.value.split()) for line, after in zip(body, body[1:])
            if isinstance(line, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)}


def preset_values(env_id: str, preset: str) -> dict:
    """The values that differ from Args' defaults for this env: BOX_DEFAULTS for a Box action space,
    IMAGE_DEFAULTS for image observations, then the env's PRESETS entry with --preset tuned."""
    observation_space, action_space = probe_env(env_id)
    values = dict(BOX_DEFAULTS) if isinstance(action_space, gym.spaces.Box) else {}
    if is_image(observation_space):
        values.update(IMAGE_DEFAULTS)
    if preset == "tuned":
        values.update(tuned_preset(env_id))
    return values


def with_env_defaults(args: Args) -> Args:
    """`train(Args(env_id=...))` from Python gets what the command line gives: every field at its Args
    default takes the env's value (BOX_DEFAULTS, IMAGE_DEFAULTS, then the preset with preset="tuned"), as
    every flag not given does on the command line, and one printed line says which. A field set to
    another value wins; one set to its Args default cannot be told from one left alone (parse_args can:
    `train(parse_args(["--env-id", "Hopper-v5", "--num-envs", "4"]))`). Args from parse_args, or with
    resume (the run's own values), are returned as they are."""
    if getattr(args, "preset_applied", False) or args.resume:
        return args
    defaults = Args()
    values = {name: value for name, value in preset_values(args.env_id, args.preset).items()
              if getattr(args, name) == getattr(defaults, name) != value}
    if values:
        print(f"{args.env_id}: Args fields left at ppo.py's Discrete defaults take this env's values, as on the "
              f"command line: {', '.join(f'{name}={value} (Args: {getattr(defaults, name)})' for name, value in values.items())}")
    return replace(args, **values)


def probe_env(env_id: str):
    """(observation space, action space) of the env, made once to check the id, its spaces and its
    autoreset mode. Anything wrong is a one-line ConfigError."""
    if ale_py is None and (env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")):
        raise ConfigError(f"{env_id} is an Atari game: pip install -r requirements-atari.txt")
    if env_id.startswith("MinAtar/") and env_id not in gym.registry:
        register_minatar(env_id)
    if is_atari(env_id) and gym.spec(env_id).kwargs.get("frameskip") not in (1, 4):
        raise ConfigError(f"{env_id} skips a random number of frames; ppo.py plays Atari as CleanRL does, 4 frames "
                          f"a step: use ALE/<Game>-v5 or <Game>NoFrameskip-v4")
    if env_id in gym.registry and str(gym.spec(env_id).entry_point).startswith("gymnasium.envs.mujoco"):
        quiet_mujoco_settotalmass()  # before the first env of the process compiles its model
    try:
        envs = make_atari_envs(env_id, 1) if is_atari(env_id) else gym.make_vec(env_id, num_envs=1)
    except gym.error.DependencyNotInstalled as e:
        extras = {"mujoco": "requirements-mujoco.txt", "box2d": "requirements-box2d.txt"}
        extra = "".join(f" (pip install -r {file})" for name, file in extras.items() if name in str(e).lower())
        raise ConfigError(f"{env_id} needs a package that is not installed{extra}: {first_line(e)}") from None
    except gym.error.Error as e:
        name = env_id.split(":")[-1]
        close = difflib.get_close_matches(name, list(gym.registry.keys()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown env id '{env_id}' ({type(e).__name__}){hint}") from None
    except ModuleNotFoundError as e:  # the `module` of a `module:Env-v0` id
        reason = str(e).split(". ")[0]
        raise ConfigError(f"env id '{env_id}': cannot import module '{env_id.split(':')[0]}' ({reason})") from None
    observation_space, action_space = envs.single_observation_space, envs.single_action_space
    autoreset_mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    try:
        check_spaces(env_id, observation_space, action_space)
        with_plain_spaces(envs, mask_actions=True)  # an action mask of the wrong shape: a ConfigError
    finally:
        envs.close()
    if autoreset_mode != gym.vector.AutoresetMode.NEXT_STEP:
        raise ConfigError(f"{env_id}'s vector env autoresets in {autoreset_mode.name} mode; the rollout "
                          "needs NEXT_STEP (gymnasium's default)")
    return observation_space, action_space


def check_spaces(env_id: str, observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> None:
    """Refuse, in one line, a space the Agent cannot take (with_plain_spaces makes the others plain)."""
    numeric = (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    if not isinstance(action_space, numeric):
        raise ConfigError(f"{env_id} has action space {action_space}; the agent takes Discrete, MultiDiscrete, MultiBinary "
                          "or Box actions (a Dict or Tuple of them: make it one of these with an ActionWrapper)")
    parts = flat_parts(observation_space)
    for name, part in parts.items():
        where = f"{env_id} has observation space {observation_space}" + (f", whose part {name!r} is" if name else ":")
        if not isinstance(part, numeric):
            raise ConfigError(f"{where} a {type(part).__name__}, not numbers the agent can take: drop it with a wrapper "
                              f"(MiniGrid's mission: gymnasium's FilterObservation(env, ['image', 'direction']))")
        if isinstance(part, gym.spaces.Box) and len(part.shape) > 3:
            raise ConfigError(f"{where} of rank {len(part.shape)}; the agent takes a vector (rank 1, or a scalar or a "
                              "table, flattened) or an image (rank 3, for the CNN): fold the other axes into channels")
    for kind, space in [*[("observation", part) for part in parts.values()], ("action", action_space)]:
        if space.shape and int(np.prod(space.shape)) == 0:
            raise ConfigError(f"{env_id} has {kind} space {space}, of size 0: nothing to see or do")


def quiet_mujoco_settotalmass():
    """MuJoCo 4 warns, on stderr and in ./MUJOCO_LOG.TXT, for every model compiled with the deprecated
    `settotalmass` (gymnasium's HalfCheetah: one line per env); the mass is still set as before. That
    one warning is dropped; MuJoCo's others are printed as it prints them."""
    try:
        import mujoco
    except ImportError:  # probe_env's make_vec then names requirements-mujoco.txt
        return
    if hasattr(mujoco, "set_mju_user_warning"):
        mujoco.set_mju_user_warning(lambda message: None if "settotalmass" in message
                                    else print(f"WARNING: {message}", file=sys.stderr))


# Atari and images: ale-py's games (registered here when requirements-atari.txt is installed) and
# MinAtar's (when asked for), the env factory make_envs calls for Atari, CleanRL's end of life, and
# the CNN the Agent uses for images.

try:  # Atari (pip install -r requirements-atari.txt): ALE/Breakout-v5, BreakoutNoFrameskip-v4, ...
    import ale_py

    gym.register_envs(ale_py)
except ImportError:
    ale_py = None


def register_minatar(env_id: str) -> None:
    """MinAtar's games (pip install -r requirements-minatar.txt): MinAtar/Breakout-v1 and the others,
    10x10 images with one channel per kind of object, for the small CNN. Its gym registration is a
    plugin hook gymnasium 1.x dropped, so it is called here, when a MinAtar id is asked for (importing
    minatar takes a second)."""
    if importlib.util.find_spec("minatar") is None:
        raise ConfigError(f"{env_id} is a MinAtar game: pip install -r requirements-minatar.txt")
    import minatar.gym

    minatar.gym.register_envs()


def is_atari(env_id: str) -> bool:
    return ale_py is not None and env_id in gym.registry and gym.registry[env_id].entry_point == "ale_py.env:AtariEnv"


def restart_action(env_id: str) -> int:
    """What to press when a life starts: FIRE (1) where the game waits for it (Breakout), else NOOP (0)."""
    env = gym.make(env_id)
    meanings = env.unwrapped.get_action_meanings()
    env.close()
    return 1 if len(meanings) > 1 and meanings[1] == "FIRE" else 0


class EndOfLifeAsTermination(gym.vector.VectorWrapper):
    """CleanRL's EpisodicLifeEnv for a NEXT_STEP vector env: losing a life ends the learning episode
    (terminated, so no value is bootstrapped past it), but not the game. The step after it is then a
    reset step like any other, which the update leaves out: the env gets restart_action in place of the
    agent's action (FireResetEnv's FIRE, or EpisodicLifeEnv's NOOP) and the reward is 0. A game over is
    the env's own termination, and its reset the env's own."""

    def __init__(self, envs: gym.vector.VectorEnv, restart_action: int):
        super().__init__(envs)
        self.restart_action = restart_action

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.lives, self.life_lost = info["lives"].copy(), np.zeros(self.num_envs, dtype=bool)
        return obs, info

    def step(self, actions):
        actions = np.where(self.life_lost, self.restart_action, actions)
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        rewards = np.where(self.life_lost, 0, rewards)
        self.life_lost = (info["lives"] < self.lives) & ~terminations & ~truncations
        self.lives = info["lives"].copy()
        return obs, rewards, terminations | self.life_lost, truncations, info


class FireOnReset(gym.Wrapper):
    """CleanRL's FireResetEnv, for one env (gymnasium has none; ale-py's vector env does it itself): press
    FIRE after each reset, for games that wait for it."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        return self.env.reset(**kwargs) if terminated or truncated else (obs, info)


def make_atari_envs(env_id: str, num_envs: int, video_folder: str | None = None, frames: int = 4) -> gym.vector.VectorEnv:
    """CleanRL's Atari preprocessing (ppo_atari.py's make_env), on gymnasium 1.x, from ale-py's own vector
    env: up to 30 no-ops after a reset (NoopResetEnv), 4 frames a step with the max over the last two
    (MaxAndSkipEnv), FIRE after a reset where the game needs it (FireResetEnv), 84x84 grayscale
    (ResizeObservation, GrayScaleObservation), the last 4 (`frames`) stacked, channels first (FrameStack).
    Rewards stay raw and a game ends at game over: make_envs adds CleanRL's end of life and reward
    clipping after RecordEpisodeStatistics. The env id gives the game, sticky actions and action set."""
    game = gym.spec(env_id).kwargs
    fire = restart_action(env_id) == 1  # the game waits for FIRE
    if video_folder is None:  # all the envs in C++ threads (ale-py's AtariVectorEnv)
        return ale_py.vector_env.AtariVectorEnv(
            game["game"], num_envs, repeat_action_probability=game.get("repeat_action_probability", 0.0),
            full_action_space=game.get("full_action_space", False), max_num_frames_per_episode=game.get(
                "max_num_frames_per_episode", 108000), frameskip=4, maxpool=True, noop_max=30, img_height=84,
            img_width=84, grayscale=True, stack_num=frames, use_fire_reset=True, episodic_life=False,
            reward_clipping=False)

    def make_env(i):  # the same, from gymnasium's wrappers around Python envs: env 0 is filmed as a person sees it
        env = gym.make(env_id, frameskip=1, render_mode="rgb_array" if i == 0 else None)
        if i == 0:
            env = gym.wrappers.RecordVideo(env, video_folder)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84)
        if fire:
            env = FireOnReset(env)
        return gym.wrappers.FrameStackObservation(env, frames)

    return gym.vector.SyncVectorEnv([lambda i=i: make_env(i) for i in range(num_envs)])


class NatureCNN(nn.Module):
    """The network of CleanRL's ppo_atari.py (Mnih et al., 2015): convolutions of 32 8x8 filters with
    stride 4, 64 4x4 with stride 2, 64 3x3, then a linear layer of 512, ReLU after each, on pixels
    scaled to [0, 1]. Images too small for its first layer (MinAtar's 10x10) get MinAtar's own network
    (Young and Tian, 2019): 16 3x3 filters, then 128. Channels first or last (the smallest axis)."""

    def __init__(self, observation_space: gym.spaces.Box):
        super().__init__()
        shape = observation_space.shape
        self.channels_last = shape[-1] < shape[0]  # (84, 84, 3) or (10, 10, 4), not (4, 84, 84)
        channels, height, width = (shape[2], shape[0], shape[1]) if self.channels_last else shape
        self.scale = 1 / 255 if observation_space.dtype == np.uint8 else 1.0
        if min(height, width) >= 36:  # what 8x8/4, 4x4/2 and 3x3/1 convolutions need
            convolutions = [layer_init(nn.Conv2d(channels, 32, 8, stride=4)), nn.ReLU(),
                            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
                            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU()]
            self.out_features = 512
        else:
            convolutions = [layer_init(nn.Conv2d(channels, 16, 3, stride=1)), nn.ReLU()]
            self.out_features = 128
        self.convolutions = nn.Sequential(*convolutions, nn.Flatten())
        flat_size = self.convolutions(torch.zeros(1, channels, height, width)).shape[1]  # 64 * 7 * 7 for 84x84
        self.linear = nn.Sequential(layer_init(nn.Linear(flat_size, self.out_features)), nn.ReLU())
        # Not in CleanRL: weights and inputs in channels-last memory (the same values, laid out NHWC), whose
        # oneDNN convolutions on a CPU take the update 1.24x less time (benchmarks/cnn_cpu.py, docs/atari.md).
        self.convolutions.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2) if self.channels_last else x  # (batch, channels, height, width) from here
        x = (x.float() * self.scale).contiguous(memory_format=torch.channels_last)  # CleanRL: x / 255.0
        return self.linear(self.convolutions(x))


# Any gymnasium space: the observations and actions other than a vector or an image and Discrete or
# Box, made plain for the Agent (with_plain_spaces, in make_envs), then encoded (ObservationEncoder)
# and sampled (ActionLogits) by it. None of this runs for CartPole, Hopper or Breakout.

def is_image(space: gym.spaces.Space) -> bool:
    """A Box of rank 3 is an image, (H, W, C) or (C, H, W): the CNN's, not the MLP's."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3


def flat_parts(tree, prefix: str = "") -> dict:
    """The leaves of a Dict or Tuple, nested or not (spaces, or the observations they give), by path:
    {"camera": ..., "arm/joints": ..., "1/0": ...}; anything else is one leaf, named prefix."""
    if isinstance(tree, (dict, gym.spaces.Dict)):
        items = tree.items()
    elif isinstance(tree, (tuple, gym.spaces.Tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    parts = {}
    for key, subtree in items:
        parts.update(flat_parts(subtree, f"{prefix}/{key}" if prefix else str(key)))
    return parts


class ObservationParts(dict):
    """A Dict observation, or a batch or a rollout of them: {part name: array or tensor}, indexed like
    one array (obs[step] = next_obs, b_obs[mb_inds]), each part alike."""

    def __getitem__(self, index):
        if isinstance(index, str):
            return super().__getitem__(index)
        return ObservationParts({name: part[index] for name, part in self.items()})

    def __setitem__(self, index, value):
        if isinstance(index, str):
            return super().__setitem__(index, value)
        for name, part in self.items():
            part[index] = value[name]


def observation_storage(space: gym.spaces.Space, batch_shape: tuple):
    """Zeros for a rollout of observations, batch_shape + each part's shape, in the part's own dtype (images
    bytes, Discrete parts integers) but floats, which are float32 (what the networks take): an array, or
    ObservationParts of arrays for a Dict."""
    if isinstance(space, gym.spaces.Dict):
        return ObservationParts({name: observation_storage(part, batch_shape) for name, part in space.items()})
    return np.zeros(batch_shape + space.shape, np.float32 if np.issubdtype(space.dtype, np.floating) else space.dtype)


def as_tensor(obs, device: torch.device, flatten_steps: bool = False):
    """Observations (an array, or ObservationParts) on the device: floats as float32, integers as they are;
    flatten_steps: a rollout's (num_steps, num_envs, ...) as one batch, (num_steps * num_envs, ...)."""
    if isinstance(obs, dict):
        return ObservationParts({name: as_tensor(part, device, flatten_steps) for name, part in obs.items()})
    if flatten_steps:
        obs = obs.reshape((-1,) + obs.shape[2:])
    return torch.as_tensor(obs, dtype=torch.float32 if obs.dtype.kind == "f" else None, device=device)


def with_plain_spaces(envs: gym.vector.VectorEnv, mask_actions: bool) -> gym.vector.VectorEnv:
    """The spaces the Agent takes, from those the env has (most envs need nothing of this):
    actions: Discrete and MultiDiscrete choices from 0 (a `start` is added on the way to the env), Box
    and MultiBinary actions flat (reshaped on the way); observations: a Box that is neither an image nor a
    float vector as a flat float vector, a Dict or Tuple (nested or not) as a flat Dict of its parts, and
    the env's action mask as its part "action_mask" (PartsObservation)."""
    action_space = envs.single_action_space
    if isinstance(action_space, gym.spaces.Discrete) and action_space.start != 0:
        envs = gym.wrappers.vector.TransformAction(envs, lambda action: action + action_space.start,
                                                   single_action_space=gym.spaces.Discrete(action_space.n))
    elif isinstance(action_space, gym.spaces.MultiDiscrete) and (action_space.start.any() or action_space.nvec.ndim != 1):
        envs = gym.wrappers.vector.TransformAction(  # nvec (2, 3) -> (6,)
            envs, lambda action: action.reshape((-1,) + action_space.shape) + action_space.start,
            single_action_space=gym.spaces.MultiDiscrete(action_space.nvec.reshape(-1)))
    elif isinstance(action_space, gym.spaces.MultiBinary) and len(action_space.shape) != 1:
        envs = gym.wrappers.vector.TransformAction(envs, lambda action: action.reshape((-1,) + action_space.shape),
                                                   single_action_space=gym.spaces.MultiBinary(int(np.prod(action_space.shape))))
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1:  # (2, 3) -> (6,); a scalar () -> (1,)
        flat = gym.spaces.Box(action_space.low.reshape(-1), action_space.high.reshape(-1), dtype=action_space.dtype)
        envs = gym.wrappers.vector.TransformAction(envs, lambda action: action.reshape((-1,) + action_space.shape),
                                                   single_action_space=flat)
    obs_space = envs.single_observation_space
    mask_actions = mask_actions and isinstance(envs.single_action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
    info_mask = envs.reset()[1].get("action_mask") if mask_actions else None  # gymnasium's toy-text envs give one
    if isinstance(obs_space, (gym.spaces.Dict, gym.spaces.Tuple)) or info_mask is not None:
        envs = PartsObservation(envs, mask_actions, info_mask)
    elif isinstance(obs_space, gym.spaces.Box) and not is_image(obs_space) and (
            len(obs_space.shape) != 1 or not np.issubdtype(obs_space.dtype, np.floating)):
        # a scalar, a table, or integers (as float64, exact: the networks' float32 is taken later, as for any float)
        dtype = obs_space.dtype if np.issubdtype(obs_space.dtype, np.floating) else np.float64
        flat = gym.spaces.Box(obs_space.low.reshape(-1), obs_space.high.reshape(-1), dtype=dtype)
        envs = gym.wrappers.vector.TransformObservation(
            envs, lambda obs: obs.reshape(len(obs), -1).astype(dtype), single_observation_space=flat)
    return envs


class PartsObservation(gym.vector.VectorWrapper):
    """A Dict or Tuple observation (nested or not) as a flat Dict of its parts, named by path ("camera",
    "arm/joints", "1/0"); a Discrete or Box observation with a mask in the info as the part "observation".
    The env's action mask (an "action_mask" part, or info["action_mask"] at every step) becomes the part
    "action_mask": one int8 per Discrete action (MultiDiscrete: per choice, dimension after dimension),
    checked at every step. With mask_actions off, a Dict's "action_mask" part is dropped."""

    def __init__(self, envs: gym.vector.VectorEnv, mask_actions: bool, info_mask: np.ndarray | None):
        super().__init__(envs)
        space = envs.single_observation_space
        parts = flat_parts(space) if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)) else {"observation": space}
        self.mask_in_info = info_mask is not None  # the mask of the first reset's info: (num_envs, n)
        self.masked = mask_actions and ("action_mask" in parts or self.mask_in_info)
        if not self.masked:
            parts.pop("action_mask", None)
        action_space = envs.single_action_space
        self.choices = [int(action_space.n)] if isinstance(action_space, gym.spaces.Discrete) else [int(n) for n in getattr(action_space, "nvec", [])]
        self.firsts = np.cumsum([0] + self.choices[:-1])  # each dimension's first entry in the mask
        if self.masked:
            mask_size = np.shape(info_mask)[1:] if self.mask_in_info else parts["action_mask"].shape
            if int(np.prod(mask_size)) != sum(self.choices):
                raise ConfigError(f"the env's action mask has shape {tuple(mask_size)}; {action_space} needs "
                                  f"({sum(self.choices)},): one entry per action{' of each dimension' if len(self.choices) > 1 else ''}")
            parts["action_mask"] = gym.spaces.MultiBinary(sum(self.choices))
        self.single_observation_space = gym.spaces.Dict(parts)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        return self.parts_of(obs, infos), infos

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        self.steps += 1
        return self.parts_of(obs, infos), rewards, terminations, truncations, infos

    def parts_of(self, obs, infos) -> ObservationParts:
        parts = flat_parts(obs) if isinstance(obs, (dict, tuple)) else {"observation": obs}
        if self.mask_in_info:
            if "action_mask" not in infos or not infos["_action_mask"].all():
                raise TrainingError(f"step {self.steps}: the env gave no info['action_mask'], as it did at its first reset")
            parts["action_mask"] = infos["action_mask"]
        if self.masked:
            mask = parts["action_mask"] = np.asarray(parts["action_mask"]).reshape(self.num_envs, -1).astype(np.int8)
            allowed = np.logical_or.reduceat(mask != 0, self.firsts, axis=1)  # (num_envs, dims)
            if not allowed.all():
                env, dimension = np.argwhere(~allowed)[0]
                raise TrainingError(f"step {self.steps}: env {env}'s action mask allows no action"
                                    + (f" in dimension {dimension}" if len(self.choices) > 1 else ""))
        else:
            parts.pop("action_mask", None)
        return ObservationParts(parts)


class ObservationEncoder(nn.Module):
    """The Agent's trunk for any observation but a vector or an image: one vector of features. Discrete
    parts as one-hots, MultiDiscrete as a one-hot per dimension, side by side, MultiBinary as 0/1 floats,
    a Box flat, an image (a Box of rank 3) through a NatureCNN of its own; a Dict's parts joined (as
    SB3's CombinedExtractor does). The "action_mask" part is no feature: the Agent masks with it."""

    def __init__(self, space: gym.spaces.Space):
        super().__init__()
        parts = space.items() if isinstance(space, gym.spaces.Dict) else [(None, space)]
        self.parts = [(name, part) for name, part in parts if name != "action_mask"]
        self.cnns = nn.ModuleList(NatureCNN(part) for _, part in self.parts if is_image(part))
        for i, (name, part) in enumerate(self.parts):  # MultiDiscrete: each dimension's first column, less its start
            if isinstance(part, gym.spaces.MultiDiscrete):
                nvec = part.nvec.reshape(-1)
                offsets = torch.as_tensor(np.cumsum([0, *nvec[:-1]]) - part.start.reshape(-1))
                self.register_buffer(f"offsets_{i}", offsets, persistent=False)  # on the agent's device
        # gymnasium's flatdim is each other part's width here: n one-hots, sum(nvec), the numbers in it
        self.out_features = sum(cnn.out_features for cnn in self.cnns) + sum(
            gym.spaces.flatdim(part) for _, part in self.parts if not is_image(part))

    def forward(self, x) -> torch.Tensor:
        features, cnns = [], iter(self.cnns)
        for i, (name, space) in enumerate(self.parts):
            part = x if name is None else x[name]
            if is_image(space):
                features.append(next(cnns)(part))
            elif isinstance(space, gym.spaces.Discrete):
                features.append(F.one_hot(part.long() - int(space.start), int(space.n)).float())
            elif isinstance(space, gym.spaces.MultiDiscrete):  # (batch, dims) -> (batch, dims, sum(nvec)) -> summed
                columns = part.reshape(len(part), -1).long() + getattr(self, f"offsets_{i}")
                features.append(F.one_hot(columns, int(space.nvec.sum())).sum(1).float())
            else:  # MultiBinary, Box: the numbers as they are, flat
                features.append(part.reshape(len(part), -1).float())
        return torch.cat(features, -1)


class ActionLogits(nn.Module):
    """The logits of the actor's Categorical from its outputs, where they are not simply those (Discrete).
    The env's invalid actions (with_plain_spaces' "action_mask") get -1e8, probability 0: Huang and
    Ontanon, "A Closer Look at Invalid Action Masking in Policy Gradient Algorithms" (2022). MultiDiscrete
    (nvec) and MultiBinary(n) actions: one row of logits per action dimension, (batch, dims, most choices),
    for one Categorical per dimension; a dimension with fewer choices is padded with -1e8. A bit's row is
    [0, l]: Categorical(logits=[0, l]) is Bernoulli(sigmoid(l)), so MultiBinary(n) takes n outputs."""

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Space):
        super().__init__()
        self.masked = isinstance(observation_space, gym.spaces.Dict) and "action_mask" in observation_space.spaces
        self.per_dimension = isinstance(action_space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary))
        self.n_outputs = int(getattr(action_space, "n", 0))  # Discrete, MultiBinary (Box: the Agent's)
        if isinstance(action_space, gym.spaces.MultiBinary):
            rows = [[self.n_outputs, bit] for bit in range(self.n_outputs)]  # column n_outputs: the 0
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            nvec = [int(n) for n in action_space.nvec]
            self.n_outputs = sum(nvec)  # column sum(nvec) + 1: the padding
            firsts = np.cumsum([0] + nvec[:-1])
            rows = [[first + i if i < n else self.n_outputs + 1 for i in range(max(nvec))] for first, n in zip(firsts, nvec)]
        if self.per_dimension:
            self.register_buffer("rows", torch.tensor(rows), persistent=False)  # (dims, most choices) column indices

    def forward(self, actor_out: torch.Tensor, x) -> torch.Tensor:
        if self.masked:
            actor_out = actor_out.masked_fill(x["action_mask"] == 0, -1e8)
        if not self.per_dimension:
            return actor_out
        zero, padding = actor_out.new_zeros(len(actor_out), 1), actor_out.new_full((len(actor_out), 1), -1e8)
        return torch.cat([actor_out, zero, padding], -1)[:, self.rows]  # (batch, dims, most choices)


# --recurrent: the Agent's memory. In the rollout (and evaluation) the recurrent layer takes one step of
# every env at a time, from each env's state in a RecurrentMemory, which it moves on; the train loop zeroes
# an env's state after its reset step (NEXT_STEP autoreset: the step after the one that ended the episode,
# whose output is the new episode's first observation). The update replays whole envs' rollouts from the
# state they started with: truncated backpropagation through time over the rollout, as ppo_atari_lstm.py.

class RecurrentLayer(nn.Module):
    """One LSTM or GRU layer over each env's features (CleanRL's ppo_atari_lstm.py: orthogonal weights, gain 1,
    biases 0). Its state is a tuple, (h, c) for the LSTM and (h,) for the GRU, each (1, envs, size)."""

    def __init__(self, kind: str, in_features: int, size: int):
        super().__init__()
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind](in_features, size)
        for name, param in self.rnn.named_parameters():
            if name.startswith("bias"):
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)
        self.is_lstm, self.size = kind == "lstm", size

    def zero_state(self, num_envs: int) -> tuple:
        zeros = self.rnn.weight_hh_l0.new_zeros(1, num_envs, self.size)
        return (zeros, zeros.clone()) if self.is_lstm else (zeros,)

    def unroll(self, sequence: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """nn.LSTM or nn.GRU over a (steps, envs, features) sequence in one call: (outputs, the state after it)."""
        output, state = self.rnn(sequence, state if self.is_lstm else state[0])
        return output, state if self.is_lstm else (state,)

    def forward(self, features: torch.Tensor, memory: "RecurrentMemory | None") -> torch.Tensor:
        if memory is None or not memory.state:
            raise ValueError("a recurrent agent needs each env's state: agent.get_action(x, agent.initial_memory(len(x)))")
        if memory.starts is None:  # one step of each env (the rollout, evaluation): the state moves on
            output, memory.state = self.unroll(features.unsqueeze(0), memory.state)
            return output[0]
        # A replay: the given rows sit at memory.rows of the (steps, envs) sequence; the rest (reset steps) stay
        # zeros, which nothing reads: their outputs are in no loss, and the state after them is zeroed.
        steps, num_envs = memory.starts.shape
        sequence = features.new_zeros(steps * num_envs, features.shape[-1])
        sequence[memory.rows] = features
        sequence = sequence.view(steps, num_envs, -1)
        # One call over each stretch of steps in which no episode starts: torch's own loop over the steps (a
        # Python loop per step is ppo_atari_lstm.py's), cut where any env's new episode begins.
        cuts = [0, *np.flatnonzero(memory.starts.any(1)), steps]
        state, outputs = memory.state, []
        for start, end in zip(cuts[:-1], cuts[1:]):
            if start > 0:
                carry_on = torch.as_tensor(~memory.starts[start], device=features.device).view(1, num_envs, 1)
                state = tuple(s * carry_on for s in state)  # = (1 - done) * state, at the new episodes' first steps
            output, state = self.unroll(sequence[start:end], state)
            outputs.append(output)
        return torch.cat(outputs).view(steps * num_envs, -1)[memory.rows]


class RecurrentMemory:
    """Each env's state of the recurrent layer (empty without --recurrent: then every method does nothing).
    In a replay, also where the rows a call gives sit in the envs' sequences: rows, flat indices into
    (steps, envs), and starts (steps, envs), True at the first step of an episode that began in the rollout."""

    def __init__(self, state: tuple, starts: np.ndarray | None = None, rows: torch.Tensor | None = None):
        self.state, self.starts, self.rows = state, starts, rows

    def copy(self) -> "RecurrentMemory":
        return RecurrentMemory(tuple(s.clone() for s in self.state))

    def forget(self, reset_step: np.ndarray) -> None:
        """Zero the state of the envs whose step just taken was a reset step: their next step is a new episode's first."""
        if self.state and reset_step.any():
            carry_on = torch.as_tensor(~reset_step, device=self.state[0].device).view(1, -1, 1)
            self.state = tuple(s * carry_on for s in self.state)

    def replay(self, resets: np.ndarray, envs: np.ndarray | None = None, rows: np.ndarray | None = None):
        """The memory that replays these envs' (all: None) whole rollout from this state, the one it began with; rows:
        the steps given, flat indices into (steps, len(envs)) (None: all). resets: (steps, all envs), the rollout's."""
        if not self.state:
            return self
        envs = np.arange(resets.shape[1]) if envs is None else envs
        starts = np.zeros((len(resets), len(envs)), dtype=bool)
        starts[1:] = resets[:-1, envs]  # after a reset step, the new episode's first step
        rows = np.arange(starts.size) if rows is None else rows
        device = self.state[0].device
        return RecurrentMemory(tuple(s[:, torch.as_tensor(envs, device=device)] for s in self.state), starts,
                               torch.as_tensor(rows, device=device))

    def minibatches(self, resets: np.ndarray, num_minibatches: int) -> list:
        """The update's minibatches under --recurrent: whole envs, shuffled, num_minibatches groups of them (as
        ppo_atari_lstm.py's envsperbatch, but sizes may differ by one); each (the group's real steps as
        indices of the flat batch, (steps * envs), and the memory that replays that group)."""
        steps, num_envs = resets.shape
        batches = []
        for envs in np.array_split(np.random.permutation(num_envs), num_minibatches):
            real = ~resets[:, envs]  # (steps, len(envs)): reset steps stay out of every loss
            flat_indices = np.arange(steps * num_envs).reshape(steps, num_envs)[:, envs]
            batches.append((flat_indices[real], self.replay(resets, envs, np.flatnonzero(real))))
        return batches


# The continuous-control wrappers (`make_envs`). With one env, as at ppo_continuous_action.py's
# defaults, each of gymnasium's wrappers costs as much per step as the arithmetic it does: five
# layers, and np.mean and np.var on a batch of one observation.

class ClipAndNormalize(gym.vector.VectorWrapper):
    """gymnasium's vector ClipAction, NormalizeObservation (then np.clip to [-10, 10]) and
    NormalizeReward (then np.clip to [-10, 10]) as one layer, each part optional: the same numbers, bit
    for bit (tests/test_continuous.py steps both), in fewer numpy calls. In a run on Hopper (1 env),
    gymnasium's five layers took 259 us a step and this one 154 (docs/speed.md). Its statistics are gymnasium's
    RunningMeanStd (obs_rms, return_rms), updated from the same batch moments; `update_running_mean =
    False` freezes both, as it does each of gymnasium's. A Dict observation's float vectors are normalised
    (side by side, as one vector, each number by its own statistics), its other parts (images, Discrete)
    left as they are; a Discrete or MultiBinary observation is not normalised."""

    def __init__(self, envs: gym.vector.VectorEnv, clip_action: bool, norm_obs: bool, norm_reward: bool,
                 gamma: float, epsilon: float = 1e-8):
        super().__init__(envs)
        self.action_bounds = (envs.single_action_space.low, envs.single_action_space.high) if clip_action else None
        if clip_action:  # as ClipAction: any action is now valid
            space = envs.single_action_space
            self.single_action_space = gym.spaces.Box(-np.inf, np.inf, space.shape, space.dtype)
            self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.obs_rms = self.return_rms = None
        space = envs.single_observation_space
        self.vector_parts = None if isinstance(space, gym.spaces.Box) else [  # a Dict's float vectors (a Discrete: none)
            name for name, part in getattr(space, "spaces", {}).items()
            if isinstance(part, gym.spaces.Box) and not is_image(part) and np.issubdtype(part.dtype, np.floating)]
        if norm_obs and self.vector_parts is None:  # as NormalizeObservation: float32 observations, float32 statistics
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, space.shape, np.float32)
            self.obs_rms = gym.wrappers.utils.RunningMeanStd(shape=space.shape, dtype=np.float32)
        elif norm_obs and self.vector_parts:
            self.single_observation_space = gym.spaces.Dict({name: gym.spaces.Box(-np.inf, np.inf, part.shape, np.float32)
                                                             if name in self.vector_parts else part for name, part in space.items()})
            size = sum(int(np.prod(space[name].shape)) for name in self.vector_parts)
            self.obs_rms = gym.wrappers.utils.RunningMeanStd(shape=(size,), dtype=np.float32)
        if self.obs_rms is not None:
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        if norm_reward:  # as NormalizeReward: a discounted sum of the rewards so far, per env
            self.return_rms = gym.wrappers.utils.RunningMeanStd(shape=())
            self.accumulated_reward = np.zeros(self.num_envs, dtype=np.float32)
            self.prev_dones = np.zeros(self.num_envs, dtype=bool)
        self.gamma, self.epsilon = gamma, epsilon
        self.update_running_mean = True

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        if self.return_rms is not None:
            self.accumulated_reward[:] = 0
            self.prev_dones[:] = False
        return self.normalize_obs(obs), infos

    def step(self, actions):
        if self.action_bounds is not None:
            actions = np.clip(actions, *self.action_bounds)
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        if self.return_rms is not None:
            active = ~self.prev_dones  # NEXT_STEP: a reset step (reward 0) neither adds to the sum nor counts
            self.accumulated_reward[active] = (self.accumulated_reward[active] * self.gamma * (1 - terminations[active])
                                               + rewards[active])
            if self.update_running_mean and active.any():
                update_running_mean_std(self.return_rms, self.accumulated_reward[active])
            self.prev_dones = terminations | truncations
            rewards = np.clip(rewards / np.sqrt(self.return_rms.var + self.epsilon), -10, 10)
        return self.normalize_obs(obs), rewards, terminations, truncations, infos

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_rms is None:
            return obs
        if self.vector_parts is not None:  # a Dict: its float vectors as one (num_envs, size), normalised, split back
            vectors = self.normalize_obs_vector(np.concatenate([obs[name].reshape(self.num_envs, -1) for name in self.vector_parts], 1))
            ends = np.cumsum([int(np.prod(obs[name].shape[1:])) for name in self.vector_parts])
            parts = np.split(vectors, ends[:-1], axis=1)
            return ObservationParts(obs, **{name: part.reshape(obs[name].shape) for name, part in zip(self.vector_parts, parts)})
        return self.normalize_obs_vector(obs)

    def normalize_obs_vector(self, obs: np.ndarray) -> np.ndarray:
        if self.update_running_mean:
            update_running_mean_std(self.obs_rms, obs)
        normalized = ((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)).astype(np.float32)
        return np.clip(normalized, -10, 10)


def update_running_mean_std(rms, batch: np.ndarray) -> None:
    """= rms.update(batch): the batch's mean and (population) variance over its first axis, then
    gymnasium's update_from_moments. np.mean and np.var compute these two with the same operations,
    behind several Python calls each."""
    n = batch.shape[0]
    mean = batch.sum(0, keepdims=True) / n  # (1,) + the batch's shape after its first axis
    centered = batch - mean
    rms.update_from_moments(mean[0], (centered * centered).sum(0) / n, n)


def check_args(args: Args) -> None:
    """Refuse bad flags or an unsupported env, in one line, before anything is written."""
    probe_env(args.env_id)
    highest_seed = 2**32 - int(os.environ.get("WORLD_SIZE", "1"))  # np.random.seed(seed + rank) takes [0, 2**32)
    if not 0 <= args.seed <= highest_seed:
        raise ConfigError(f"--seed must be in [0, {highest_seed}], got {args.seed}")
    longest_name = new_run_name(replace(args, exp_name=args.exp_name + "-eval" * args.eval_only)) + "_999"
    if len(longest_name.encode()) > 255:  # NAME_MAX of Linux and macOS file systems
        raise ConfigError(f"--exp-name is too long for a directory name ({len(args.exp_name.encode())} bytes)")
    if args.resume is not None and not args.resume:
        raise ConfigError("--resume needs a run directory or a checkpoint")
    # (an infinite --max-grad-norm or --target-kl means no limit)
    for name in ["learning_rate", "ent_coef", "vf_coef", "log_std_init"]:
        if not math.isfinite(getattr(args, name)):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(args, name)}")
    if args.capture_video:
        check_renders(args.env_id)
    for name in ["total_timesteps", "learning_rate", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                 "clip_coef", "max_grad_norm", "hidden_size", "recurrent_size"]:
        if not getattr(args, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ["ent_coef", "vf_coef", "checkpoint_every", "eval_episodes", "torch_threads"]:
        if not getattr(args, name) >= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ["gamma", "gae_lambda"]:
        if not 0 <= getattr(args, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if not args.clip_coef < 1:
        raise ConfigError(f"--clip-coef must be in (0, 1), got {args.clip_coef}")
    if args.target_kl is not None and not args.target_kl > 0:
        raise ConfigError(f"--target-kl must be positive, got {args.target_kl}")
    if not args.exp_name or "/" in args.exp_name or args.exp_name.startswith("."):
        raise ConfigError(f"--exp-name must be a plain name (part of a directory name), got {args.exp_name!r}")
    if args.eval_only and (args.model_path is None or args.eval_episodes == 0):
        raise ConfigError("--eval-only needs --model-path PATH and --eval-episodes N")
    if args.model_path is not None and not args.eval_only:
        raise ConfigError("--model-path is read only with --eval-only")
    if args.eval_only and args.resume:
        raise ConfigError("--eval-only and --resume exclude each other")
    if args.eval_only and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--eval-only runs in one process: python ppo.py --eval-only ..., not torchrun")
    if args.preset == "tuned":
        tuned_preset(args.env_id)  # refuses an env without one
    if args.backend == "nccl" and not (torch.cuda.is_available() and args.cuda):
        raise ConfigError("--backend nccl needs CUDA; on the CPU use gloo (--backend auto chooses)")
    batch_size = args.num_envs * args.num_steps
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's process count
    if args.num_envs % world_size != 0:
        raise ConfigError(f"--num-envs {args.num_envs} does not split evenly over {world_size} torchrun processes")
    # Reset steps leave the batch: up to half of each env's steps when every episode lasts one step.
    # Each minibatch (each process's share of it) must keep 2 real transitions: advantage normalisation
    # takes their std.
    num_envs = args.num_envs // world_size
    fewest_real = num_envs * (args.num_steps // 2)
    if fewest_real < 2 * args.num_minibatches:
        raise ConfigError(f"--num-minibatches {args.num_minibatches} is too many for {num_envs} envs x "
                          f"{args.num_steps} steps{' per process' if world_size > 1 else ''}: if episodes end "
                          f"often, as few as {fewest_real} transitions are real (reset steps are left out), and "
                          f"each minibatch needs 2")
    if args.recurrent != "none" and num_envs < args.num_minibatches:
        raise ConfigError(f"--recurrent: each minibatch takes whole envs, and --num-minibatches {args.num_minibatches} "
                          f"is more than the {num_envs} envs{' per process' if world_size > 1 else ''}")
    if args.total_timesteps < batch_size:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is smaller than one batch "
                          f"(num_envs * num_steps = {batch_size})")
    for flag, module in [("track", "wandb"), ("capture_video", "moviepy")]:
        if getattr(args, flag) and importlib.util.find_spec(module) is None:
            raise ConfigError(f"--{flag.replace('_', '-')} needs the '{module}' package: pip install {module}")


def check_renders(env_id: str) -> None:
    """--capture-video records rgb_array frames: refuse an env that cannot render them, before anything is written."""
    try:
        env = gym.make(env_id, render_mode="rgb_array")
        try:
            env.reset(seed=0)
            frame = env.render()
        finally:
            env.close()
    except Exception as e:  # no render_mode argument, no OpenGL for MuJoCo (set MUJOCO_GL=egl or osmesa), ...
        raise ConfigError(f"--capture-video: {env_id} cannot render rgb_array frames: {first_line(e)}") from None
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3):
        raise ConfigError(f"--capture-video: {env_id} renders {type(frame).__name__}, not rgb_array frames")


def first_line(e: Exception) -> str:
    """An exception's message cut to one line, for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


@dataclass
class Run:
    """A training run: its flags, its name (runs/{name}) and directory, whether that directory held the run
    before (a resume, or a torchrun restart), the checkpoint it continues (if any), and this process's
    rank among the world_size processes of torchrun (0 of 1 when alone)."""

    args: Args
    name: str
    dir: str
    reopened: bool = False
    checkpoint: dict | None = None
    rank: int = 0
    world_size: int = 1


# Flags a resumed run cannot change: they decide what the agent sees, and the shape and length of the run.
RESUME_FIXED = ["env_id", "seed", "num_envs", "num_steps", "total_timesteps", "exp_name", "gamma",
                "norm_obs", "norm_reward", "clip_action", "preset", "hidden_size", "activation", "ortho_init",
                "log_std_init", "recurrent", "recurrent_size"]


def torch_threads(args: Args, observation_space: gym.spaces.Space) -> int:
    """How many threads torch computes on (--torch-threads; 0 chooses by the observations, as measured in
    docs/speed.md and docs/atari.md). An MLP's ops are too small to split: a second thread only adds
    synchronisation, so vector observations get 1. A CNN's convolutions are real arithmetic that every
    core shares: images get the cores this process may run on, divided among torchrun's processes on
    this machine. OMP_NUM_THREADS, when set, is taken instead (torch has read it), except under
    torchrun, which sets it to 1 for its processes itself."""
    if args.torch_threads > 0:
        return args.torch_threads
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine
    if "OMP_NUM_THREADS" in os.environ and processes == 1:
        return torch.get_num_threads()
    if not any(is_image(part) for part in flat_parts(observation_space).values()):
        return 1  # no image, no CNN (the Agent's, as built)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes)


def open_run(args: Args) -> Run:
    """Check everything that can be refused (every process, before anything is written), join torchrun's
    processes, then make runs/{run_name} and start wandb (rank 0). With --resume, or after torchrun
    restarted failed workers, reopen the run's own directory and load its checkpoint."""
    args = with_env_defaults(args)  # Args from Python: the env's defaults and preset, as on the command line
    check_args(args)
    if args.eval_only:
        raise ConfigError("train() trains; --eval-only is evaluate_saved_model(args), as the command line calls it")
    rank, world_size = join_processes(args)
    outcome = None
    if rank == 0:
        try:
            outcome = run_directory(args, world_size)
        except ConfigError as e:
            outcome = e
    outcome = from_rank_0(outcome)  # every process gets rank 0's run, or its error
    if isinstance(outcome, ConfigError):
        raise outcome
    run = Run(args, *outcome, rank=rank, world_size=world_size)
    if args.track and rank == 0:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run.name, id=run.name, resume="allow", save_code=True)
    return run


def run_directory(args: Args, world_size: int) -> tuple[str, str, bool, dict | None]:
    """(name, directory, reopened, checkpoint): a new runs/{run_name}, the directory of the run to
    --resume, or after a torchrun restart, the directory of the run the failed workers trained (with
    its checkpoint, if they wrote one)."""
    run_dir = checkpoint = None
    if args.resume:
        run_dir = args.resume if os.path.isdir(args.resume) else os.path.dirname(args.resume) or "."
        checkpoint = load_checkpoint(args.resume)
    elif int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:  # restart recovery (torchrun section)
        run_dir = torchrun_run_directory()
        if run_dir is not None and os.path.exists(f"{run_dir}/checkpoint.pt"):
            checkpoint = load_checkpoint(run_dir)
    if checkpoint is not None:
        saved = {**asdict(Args()), **checkpoint["args"]}  # a flag newer than the checkpoint: its default
        changed = [name for name in RESUME_FIXED if getattr(args, name) != saved[name]]
        if changed:
            flags = ", ".join(f"--{name.replace('_', '-')} (was {saved[name]!r}, now {getattr(args, name)!r})"
                              for name in changed)
            raise ConfigError(f"cannot change {flags} when resuming; start a new run instead")
        if checkpoint["world_size"] != world_size:
            raise ConfigError(f"this run was trained by {checkpoint['world_size']} process(es) and resumes only with as "
                              f"many (torchrun --nproc-per-node); this is {world_size}")
        return checkpoint["run_name"], run_dir, True, checkpoint
    if run_dir is not None:  # restarted before its first checkpoint: start again, in the same directory
        return os.path.basename(run_dir), run_dir, True, None
    run_name = new_run_dir(args)
    mark_torchrun_run(f"runs/{run_name}")  # so that restarted workers find it
    return run_name, f"runs/{run_name}", False, None


def new_run_name(args: Args) -> str:
    return f"{args.env_id.replace('/', '-').replace(':', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"


def new_run_dir(args: Args) -> str:
    """runs/{env_id}__{exp_name}__{seed}__{unix time}: a new directory, never an old run's."""
    run_name = new_run_name(args)
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


def open_writer(run: Run, start_step: int):
    """TensorBoard in the run's directory, with the flags as a table at the step training starts from
    (rank 0; the other processes of torchrun get a writer that writes nothing). purge_step: in a
    reopened run, TensorBoard hides what an earlier process logged after the checkpoint."""
    if run.rank != 0:
        return NoWriter()
    writer = SummaryWriter(run.dir, purge_step=start_step + 1 if run.reopened else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" +
                    "\n".join(f"|{key}|{value}|" for key, value in asdict(run.args).items()), start_step)
    return writer


# v3: the agent's plain state_dict, ClippedAdam's flat m and v, and (since torchrun) each process's statistics
# and random states under "processes"; v2 kept the observation statistics in the agent.
CHECKPOINT_FORMAT = "ppo.py checkpoint v3"


def save_checkpoint(run: Run, iteration: int, agent: Agent, optimizer, envs: gym.vector.VectorEnv) -> None:
    """Everything the run needs to go on from this iteration, written atomically by rank 0: a crash
    leaves the old checkpoint or the new one, never half of one. The weights and the optimizer are
    the same in every process; the normalisation statistics and random states are each process's own."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    process_state = {"env_stats": get_env_stats(envs), "rng": {
        "torch": torch.get_rng_state(), "numpy": numpy_state,
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}}
    process_states = gather_from_all(process_state)  # [rank 0's, rank 1's, ...]
    if run.rank != 0:
        return
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "args": asdict(run.args), "run_name": run.name, "world_size": run.world_size,
        "iteration": iteration, "global_step": iteration * run.args.num_envs * run.args.num_steps,
        "agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "processes": process_states,
    }
    write_checkpoint(checkpoint, f"{run.dir}/checkpoint.pt")


def mark_evaluated(run: Run, iteration: int) -> None:
    """Record in the checkpoint that the evaluation after `iteration` is logged, so that resuming the
    finished run does not log it again (rank 0, after the evaluation)."""
    checkpoint = load_checkpoint(run.dir)
    checkpoint["evaluated_iteration"] = iteration
    write_checkpoint(checkpoint, f"{run.dir}/checkpoint.pt")


def write_checkpoint(checkpoint: dict, path: str) -> None:
    """Atomically: a temporary file, fsync, then a rename, so that path holds the old checkpoint or the new one."""
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
    missing = [key for key in ("args", "run_name", "world_size", "iteration", "agent", "optimizer", "processes")
               if key not in checkpoint]
    if missing:  # a v3 checkpoint from before torchrun support, or a damaged one
        raise ConfigError(f"{path} lacks {', '.join(missing)}: written by an older ppo.py, or damaged")
    return checkpoint


def restore_checkpoint(run: Run, agent: Agent, optimizer, envs: gym.vector.VectorEnv) -> int:
    """Load a resumed run's agent, optimizer, env statistics and random states; returns the iterations
    it has done (0 for a new run). A checkpoint that does not fit (an edited Agent) is a ConfigError."""
    checkpoint = run.checkpoint
    if checkpoint is None:
        return 0
    try:
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the checkpoint in {run.dir} does not fit this agent or optimizer: {first_line(e)}") from None
    for group in optimizer.param_groups:  # the rate is a flag, not state: --learning-rate (the run's, or given) wins
        group["lr"] = run.args.learning_rate  # (with --anneal-lr, the loop then sets this iteration's fraction of it)
    process_state = checkpoint["processes"][run.rank]  # this process's own statistics and random states
    set_env_stats(envs, process_state["env_stats"])
    rng = process_state["rng"]
    torch.set_rng_state(rng["torch"])
    rng["numpy"]["state"]["key"] = rng["numpy"]["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(rng["numpy"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return checkpoint["iteration"]


NORMALIZERS = {"obs": "obs_rms", "return": "return_rms"}  # ClipAndNormalize's statistics


def find_wrapper(envs: gym.vector.VectorEnv, wrapper_type: type):
    """The wrapper of that type in the envs' stack of wrappers, or None."""
    while isinstance(envs, gym.vector.VectorWrapper):
        if isinstance(envs, wrapper_type):
            return envs
        envs = envs.env
    return None


def get_env_stats(envs: gym.vector.VectorEnv) -> dict:
    """The running statistics of the normalisation wrappers (--norm-obs, --norm-reward), as tensors."""
    stats = {}
    wrapper = find_wrapper(envs, ClipAndNormalize)
    for name, attr in NORMALIZERS.items():
        rms = getattr(wrapper, attr, None)
        if rms is not None:
            stats[name] = {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var), "count": float(rms.count)}
    return stats


def set_env_stats(envs: gym.vector.VectorEnv, stats: dict) -> None:
    wrapper = find_wrapper(envs, ClipAndNormalize)
    for name, attr in NORMALIZERS.items():
        rms = getattr(wrapper, attr, None)
        if rms is not None and name in stats:
            rms.mean, rms.var = stats[name]["mean"].numpy().copy(), stats[name]["var"].numpy().copy()
            rms.count = stats[name]["count"]


class stop_on_signal:
    """`with stop_on_signal() as stop:` a SIGINT (Ctrl-C) or SIGTERM sets `stop.signum` instead of
    ending the process, so that training can finish its iteration and checkpoint. A second one
    quits at once (checkpoints are replaced atomically, so none is left half-written)."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            self.previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def request_stop(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        if process_rank() == 0:
            print(f"\n{signal.Signals(signum).name}: stopping after this iteration (again to quit at once)", flush=True)

    def requested(self) -> bool:
        """Whether to stop now. Under torchrun, whether any process was signalled: all stop at the same
        iteration. A signal that lands during the all-reduce counts at the next iteration's."""
        if not dist.is_initialized():
            return self.signum is not None
        signum = torch.tensor(self.signum or 0, device=collective_device())
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        agreed = int(signum)  # the highest signal number of all processes, 0 if none was signalled
        if agreed:
            self.signum = agreed
        return bool(agreed)

    def __exit__(self, *exc_info):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def exit_if_stopped(run: Run, iteration: int, stop: stop_on_signal) -> None:
    """The last step of a run a signal stopped. A signal's whole way, in order: request_stop sets
    stop.signum; the loop's `if stop.requested(): break` ends the run after the iteration (under
    torchrun every process at the same one); finish_run writes the checkpoint, skips the model and
    the evaluation (or cuts it short, unlogged), and calls this: rank 0 says how to resume, every
    process raises TrainingInterrupted, and main returns 128 + the signal's number."""
    if stop.signum is None:
        return
    if run.rank == 0 and run.args.checkpoint_every:
        script = sys.argv[0] if sys.argv[0].endswith(".py") else "ppo.py"
        print(f"checkpoint saved at step {iteration * run.args.num_envs * run.args.num_steps:,}; resume with:\n"
              f"  python {script} --resume {run.dir}", flush=True)
    elif run.rank == 0:
        print("stopped without a checkpoint (--checkpoint-every 0)", flush=True)
    raise TrainingInterrupted(stop.signum)


def process_rank() -> int:
    """This process's rank under torchrun (its RANK), 0 alone: for code that runs before the run is
    open or outside it (errors, the signal handler, the console). Inside a run it is run.rank."""
    return int(os.environ.get("RANK", "0"))


def join_processes(args: Args) -> tuple[int, int]:
    """(rank, world_size). Under torchrun (or any launcher that sets WORLD_SIZE), join its process
    group, each process on the GPU of its LOCAL_RANK when using CUDA. Alone: rank 0 of 1, nothing to join."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    cuda = torch.cuda.is_available() and args.cuda
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    store, rank, world_size = next(dist.rendezvous("env://"))  # torchrun's key-value store, as init_process_group's
    # After a restart the new processes share that store with the dead ones: keep their keys apart
    # (restart recovery, below).
    store = dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group({"auto": "nccl" if cuda else "gloo"}.get(args.backend, args.backend), store=store,
                            rank=rank, world_size=world_size)
    return rank, world_size


# Restart recovery. With `torchrun --max-restarts K`, torchrun starts every process again when one
# dies; the new processes must continue the run the dead ones trained, not start another. Three pieces:
# a new run made under torchrun is marked with the job's id (mark_torchrun_run, from run_directory);
# restarted processes (TORCHELASTIC_RESTART_COUNT > 0) find the marked directory
# (torchrun_run_directory) and resume from its checkpoint as --resume would (run_directory); and
# join_processes keeps their keys in torchrun's store apart from the dead processes' (PrefixStore).

def mark_torchrun_run(run_dir: str) -> None:
    """Under torchrun, write the job's id into the new run's directory (alone: nothing)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        with open(f"{run_dir}/torchrun_run_id", "w") as f:
            f.write(os.environ["TORCHELASTIC_RUN_ID"])


def torchrun_run_directory() -> str | None:
    """The directory of the run that this torchrun job (TORCHELASTIC_RUN_ID) started, if it made one."""
    for marker in sorted(glob.glob("runs/*/torchrun_run_id")):
        with open(marker) as f:
            if f.read() == os.environ["TORCHELASTIC_RUN_ID"]:
                return os.path.dirname(marker)
    return None


# The collectives: each does nothing in one process (no process group).

def collective_device() -> torch.device:
    """Where tensors for collectives live: nccl's are on the GPU, gloo's on the CPU."""
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def from_rank_0(obj):
    """obj as rank 0 has it, in every process (alone: obj)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_from_all(obj) -> list:
    """[rank 0's obj, rank 1's, ...] in every process (alone: [obj])."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_weights(agent: Agent) -> None:
    """Every process takes rank 0's weights (and buffers), so all start from the same agent."""
    if dist.is_initialized():
        for tensor in agent.state_dict().values():
            dist.broadcast(tensor, src=0)


def all_reduce_gradients(agent: Agent, num_samples: int) -> None:
    """The gradient of the mean loss over every process's share of the minibatch, in every process.
    Each process holds the gradient of the mean over its own num_samples; the shares differ in size
    (each leaves out its own reset steps), so each is weighted by its size: sum(n_i * g_i) / sum(n_i).
    One all-reduce of one flat vector, the count at its end (DDP, without wrapping the agent, would
    take the plain mean). Alone: nothing to do."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in agent.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads] + [torch.ones(1, device=grads[0].device)]) * num_samples
    dist.all_reduce(flat)
    flat = flat[:-1] / flat[-1]
    for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(mean.view_as(g))


def mean_and_std_over_processes(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the values of all processes together, as values.mean() and values.std() (unbiased)
    of them all in one process: advantage normalisation over the whole minibatch. One all-reduce of
    three numbers a minibatch under torchrun; alone: values.mean(), values.std()."""
    if not dist.is_initialized():
        return values.mean(), values.std()
    local = values.detach().double()
    sums = torch.stack([torch.tensor(float(len(local)), dtype=torch.float64, device=local.device),
                        local.sum(), (local ** 2).sum()])  # n, sum x, sum x^2
    dist.all_reduce(sums)
    count, total, total_sq = sums
    mean = total / count
    std = ((total_sq - total * mean) / (count - 1)).clamp(min=0).sqrt()
    return mean.to(values.dtype), std.to(values.dtype)


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over all processes, so that all decide alike (--target-kl). Alone: value."""
    if not dist.is_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def gather_episodes(episodes: list) -> list:
    """The episodes every process finished this iteration, for rank 0 to log, in step order."""
    if not dist.is_initialized():
        return episodes
    return sorted(episode for process_episodes in gather_from_all(episodes) for episode in process_episodes)


class NoWriter:
    """The TensorBoard writer of torchrun's ranks other than 0: it writes nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def check_finite(iteration: int, stats: dict, agent: Agent) -> None:
    """A non-finite loss or weight would poison every later update and checkpoint: stop the run."""
    for name, values in stats.items():
        if not torch.isfinite(values).all():
            raise TrainingError(f"iteration {iteration}: {name} is not finite ({values[-1].item()})")
    for name, param in agent.named_parameters():
        if not torch.isfinite(param).all():
            raise TrainingError(f"iteration {iteration}: parameter {name} is not finite")


def print_progress(global_step: int, total_steps: int, episode_returns: list, sps: int, elapsed: float) -> None:
    if process_rank() != 0:
        return  # under torchrun, rank 0 speaks for all
    recent = f"{np.mean(episode_returns[-20:]):.2f}" if episode_returns else "n/a"
    left = (total_steps - global_step) / max(sps, 1)
    print(f"step {global_step:,}/{total_steps:,} ({global_step / total_steps:.0%})  mean return (last 20) {recent}  "
          f"SPS {sps:,}  elapsed {format_seconds(elapsed)}  left {format_seconds(left)}", flush=True)


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def finish_run(run: Run, writer: SummaryWriter, iteration: int, agent: Agent, optimizer, envs, stop) -> None:
    """After the loop: the last checkpoint; then, unless a signal stopped the run, the model and the
    evaluation. A signal, even one during saving or evaluation, exits 130 / 143 (TrainingInterrupted)."""
    args = run.args
    resumed_here = run.checkpoint is not None and run.checkpoint["iteration"] == iteration  # nothing trained since
    if args.checkpoint_every and iteration % args.checkpoint_every != 0 and not resumed_here:
        save_checkpoint(run, iteration, agent, optimizer, envs)
    obs_stats = get_env_stats(envs).get("obs")  # the statistics the agent was trained with, if any
    envs.close()
    if run.rank != 0:  # the model, the evaluation and the console: rank 0's
        return exit_if_stopped(run, iteration, stop)
    if stop.signum is None and args.save_model:
        model_path = f"{run.dir}/{args.exp_name}.cleanrl_model"
        torch.save(model_state_dict(agent, obs_stats), model_path)
        print(f"model saved to {model_path}")
    evaluated = resumed_here and run.checkpoint.get("evaluated_iteration") == iteration
    if stop.signum is None and args.eval_episodes and evaluated:  # a finished run, resumed: logged once is enough
        print("this model's evaluation is logged already; --eval-only evaluates a saved model again")
    elif stop.signum is None and args.eval_episodes:
        device = next(agent.parameters()).device
        eval_returns = evaluate(agent, args, args.eval_episodes, device,
                                f"videos/{run.name}/eval" if args.capture_video else None, obs_stats, stop)
        if stop.signum is None:  # a stopped evaluation is not logged: the resumed run evaluates again, whole
            log_evaluation(writer, eval_returns)
            if args.checkpoint_every:
                mark_evaluated(run, iteration)
    writer.close()
    if args.track:
        import wandb

        wandb.finish()
    exit_if_stopped(run, iteration, stop)


def model_state_dict(agent: Agent, obs_stats: dict | None) -> dict:
    """What --save-model writes: the agent's state_dict (as CleanRL), plus the observation statistics
    `obs_rms.mean` and `obs_rms.var` when it was trained on normalised observations."""
    state = agent.state_dict()
    if obs_stats is not None:
        state["obs_rms.mean"], state["obs_rms.var"] = obs_stats["mean"], obs_stats["var"]
    return state


MAX_EVAL_EPISODE_STEPS = 100_000  # an evaluation episode that runs longer never ends (an env without a time limit)


def evaluate(agent: Agent, args: Args, episodes: int, device, video_folder: str | None = None,
             obs_stats: dict | None = None, stop=None) -> np.ndarray:
    """Returns of `episodes` episodes of the greedy policy on a fresh env, observations normalised
    with the given statistics (frozen) when there are any. A stop signal ends it early."""
    envs = make_envs(replace(args, norm_obs=obs_stats is not None, norm_reward=False), 1, video_folder)
    if obs_stats is not None:
        normalizer = find_wrapper(envs, ClipAndNormalize)
        normalizer.update_running_mean = False
        normalizer.obs_rms.mean = obs_stats["mean"].double().numpy().copy()
        normalizer.obs_rms.var = obs_stats["var"].double().numpy().copy()
    obs, _ = envs.reset(seed=args.seed + 100_000)  # not the seeds training started from
    returns = []
    steps_in_episode = 0
    memory, done = agent.initial_memory(1), np.zeros(1, dtype=bool)  # --recurrent: the state, through each episode
    while len(returns) < episodes and not (stop is not None and stop.signum):
        with torch.inference_mode():
            action = agent.get_greedy_action(as_tensor(obs, device), memory)
            memory.forget(done)  # after a reset step
        obs, _, terminated, truncated, info = envs.step(action.cpu().numpy())
        done = terminated | truncated
        steps_in_episode += 1
        if "episode" in info:
            returns.append(float(info["episode"]["r"][0]))
            steps_in_episode = 0
        elif steps_in_episode > MAX_EVAL_EPISODE_STEPS:
            envs.close()
            raise TrainingError(f"evaluation: an episode of {args.env_id} lasted over {MAX_EVAL_EPISODE_STEPS:,} "
                                "steps; give the env a time limit (gym.register(..., max_episode_steps=N))")
    envs.close()
    return np.array(returns)


def log_evaluation(writer: SummaryWriter, eval_returns: np.ndarray) -> None:
    for episode, episode_return in enumerate(eval_returns):
        writer.add_scalar("eval/episodic_return", episode_return, episode)
    if len(eval_returns):
        print(f"eval: mean return {eval_returns.mean():.2f} ± {eval_returns.std():.2f} "
              f"over {len(eval_returns)} episodes (greedy policy)")


def evaluate_saved_model(args: Args) -> Agent:
    """--eval-only: load a saved model, evaluate it, log to a new run directory. Observations are
    normalised when, and as, the model's training normalised them (its `obs_rms.*` entries)."""
    check_args(args)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    try:
        state = torch.load(args.model_path, map_location=device, weights_only=True)
        obs_stats = {key[len("obs_rms."):]: state.pop(key).cpu() for key in list(state) if key.startswith("obs_rms.")}
        envs = make_envs(replace(args, norm_obs=False, norm_reward=False), 1)
        agent = Agent(envs, args.hidden_size, args.activation, args.ortho_init, args.log_std_init, args.recurrent,
                      args.recurrent_size).to(device)
        envs.close()
        try:
            agent.load_state_dict(state)
        except RuntimeError as e:  # torch lists each layer that does not fit: name the first, and the likely cause
            raise ValueError(f"trained with other network flags (--hidden-size? --recurrent?): {str(e).splitlines()[1].strip()}")
    except Exception as e:  # missing, truncated, foreign, for another env or network, or pickled code
        raise ConfigError(f"cannot load model {args.model_path} for {args.env_id}: {first_line(e)}") from None
    run_name = new_run_dir(replace(args, exp_name=f"{args.exp_name}-eval"))
    writer = SummaryWriter(f"runs/{run_name}")
    with stop_on_signal() as stop:
        eval_returns = evaluate(agent, args, args.eval_episodes, device,
                                f"videos/{run_name}" if args.capture_video else None, obs_stats or None, stop)
        log_evaluation(writer, eval_returns)
        writer.close()
    if stop.signum is not None:
        raise TrainingInterrupted(stop.signum)
    return agent


def main(argv: list[str] | None = None) -> int:
    """The command line: parse the flags, train (or evaluate), turn errors into one line and an exit code."""
    try:
        args = parse_args(argv)
        if args.eval_only:
            evaluate_saved_model(args)
        else:
            train(args)
    except (ConfigError, TrainingError) as e:
        if process_rank() == 0:  # under torchrun, once
            print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except TrainingInterrupted as e:
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the training loop, which has nothing to checkpoint yet
        if process_rank() == 0:
            print("\nSIGINT: stopped before training began; nothing was trained", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
