"""RLHF in miniature: supervised fine-tuning, a reward model, then ppo.py's PPO, token by token.

The three stages of InstructGPT-style RLHF (DeepSpeed-Chat's steps 1, 2 and 3), on a toy language
small enough to print and to train on a laptop CPU in about a minute:

    python examples/rlhf/rlhf_ppo.py --plot-path docs/rlhf_curves.png

The language: a prompt of 3 digits, then a response of digits ended by <eos>. A hidden labeler
prefers responses that climb: each digit above the one before it (the prompt's last digit first)
earns +1, each other token -1. Only the reward model learns this taste, from pairs of responses
the labeler ranked; PPO then sees the reward model's score and nothing else.

The PPO pieces are ppo.py's own: `compute_gae` (time = token positions, envs = sequences),
`ppo_loss` (through `TokenAgent`, whose get_action_and_value returns one entry per response token)
and `ClippedAdam`. What RLHF adds is here, named against DeepSpeed-Chat's ppo_trainer.py and TRL's
PPO trainer; docs/rlhf.md is the chapter that reads it line by line.
"""

import copy
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))  # the repo root: ppo.py
from ppo import ClippedAdam, compute_gae, ppo_loss  # noqa: E402


@dataclass
class Config:
    seed: int = 1
    """seed of torch and numpy: the same seed, the same run"""
    plot_path: str | None = "rlhf_curves.png"
    """where to write the plot of score and KL over PPO iterations (None: no plot)"""

    # Stage 1: supervised fine-tuning (SFT) on demonstrations; the result is also the frozen reference
    sft_steps: int = 600
    """gradient steps of SFT"""
    sft_batch_size: int = 64
    """demonstrations per SFT step"""
    sft_learning_rate: float = 3e-3
    """Adam's learning rate for SFT"""

    # Stage 2: the reward model, on preference pairs (chosen, rejected)
    rm_pairs: int = 32768
    """training pairs, ranked by the labeler, each seen once (InstructGPT trains its reward model for one epoch)"""
    rm_heldout_pairs: int = 1024
    """held-out pairs for the reward model's accuracy"""
    rm_steps: int = 512
    """gradient steps of the reward model"""
    rm_batch_size: int = 64
    """pairs per step"""
    rm_learning_rate: float = 3e-3
    """Adam's learning rate for the reward model"""

    # Stage 3: PPO. The names ppo_loss reads are ppo.py's (clip_coef, clip_vloss, ent_coef, vf_coef, norm_adv).
    ppo_iterations: int = 100
    """PPO iterations: generate a batch, score it, update on it"""
    rollout_batch_size: int = 128
    """prompts per iteration, one response each"""
    update_epochs: int = 4
    """passes over each batch (TRL's num_ppo_epochs 4; DeepSpeed-Chat's ppo_epochs 1)"""
    num_minibatches: int = 4
    """minibatches of whole sequences per epoch"""
    learning_rate: float = 1e-3
    """Adam's learning rate for the policy and the critic (one optimizer, as ppo.py)"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip of ClippedAdam, over policy and critic together"""
    kl_coef: float = 0.1
    """beta of the per-token KL penalty -beta * (log pi - log pi_ref) (DeepSpeed-Chat's kl_ctl 0.1; TRL's kl_coef 0.05)"""
    clip_reward: float = 5.0
    """the reward model's score is clipped to +- this (DeepSpeed-Chat's clip_reward_value 5)"""
    gamma: float = 1.0
    """discount over the tokens of a response: 1, there is one reward at its end"""
    gae_lambda: float = 0.95
    """GAE's lambda (DeepSpeed-Chat's lam, TRL's lam: 0.95)"""
    norm_adv: bool = True
    """whiten advantages per minibatch, over its response tokens (ppo.py's ppo_loss; TRL: over the whole batch; DeepSpeed-Chat: not at all)"""
    clip_coef: float = 0.2
    """PPO's clip of the ratio, and of the value around the rollout's (DeepSpeed-Chat's cliprange and cliprange_value)"""
    clip_vloss: bool = True
    """clip the value loss, as DeepSpeed-Chat's critic_loss_fn and TRL"""
    ent_coef: float = 0.0
    """no entropy bonus: -beta * KL(pi || pi_ref) = beta * H(pi) + beta * E[log pi_ref] holds one already"""
    vf_coef: float = 0.5
    """weight of the value loss in the one loss (ppo.py's 0.5; TRL's vf_coef 0.1)"""


# ALGO LOGIC, the toy task: a vocabulary of 13 tokens, prompts, demonstrations, and the labeler's taste
DIGITS = 10  # tokens 0-9 are the digits themselves
BOS, EOS, PAD = 10, 11, 12
VOCAB = 13
PROMPT_LEN = 4  # <bos> and 3 digits
RESPONSE_LEN = 8  # at most 8 response tokens, <eos> included
SEQ_LEN = PROMPT_LEN + RESPONSE_LEN


def make_prompts(n: int, rng: np.random.Generator) -> torch.Tensor:
    """n prompts, <bos> then 3 random digits: (n, PROMPT_LEN)."""
    digits = rng.integers(0, DIGITS, (n, PROMPT_LEN - 1))
    return torch.as_tensor(np.concatenate([np.full((n, 1), BOS), digits], axis=1))


def random_responses(n: int, rng: np.random.Generator) -> torch.Tensor:
    """n responses of 2-6 random digits and <eos>, padded with <pad>: (n, RESPONSE_LEN)."""
    lengths = rng.integers(2, 7, (n, 1))  # digits before <eos>
    digits = rng.integers(0, DIGITS, (n, RESPONSE_LEN))
    position = np.arange(RESPONSE_LEN)
    return torch.as_tensor(np.where(position < lengths, digits, np.where(position == lengths, EOS, PAD)))


def response_mask(responses: torch.Tensor) -> torch.Tensor:
    """True for the response tokens up to and including the first <eos>; False for the padding after it.

    (batch, RESPONSE_LEN) bool. A response without <eos> is all True: the length limit ended it."""
    is_eos = (responses == EOS).long()
    eos_before = is_eos.cumsum(1) - is_eos  # how many <eos> came strictly before each position
    return eos_before == 0


def labeler_scores(sequences: torch.Tensor) -> torch.Tensor:
    """The hidden taste, (batch,): +1 for each response digit above the token before it, -1 for any
    other response token before <eos>. The token before the first response digit is the prompt's last."""
    tokens, previous = sequences[:, PROMPT_LEN:], sequences[:, PROMPT_LEN - 1 : -1]  # (batch, RESPONSE_LEN) each
    climbs = (tokens < DIGITS) & (tokens > previous)
    counted = response_mask(tokens) & (tokens != EOS)
    return ((2 * climbs.long() - 1) * counted).sum(1)


def make_preference_pairs(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n (chosen, rejected) pairs: two random responses to one prompt, ranked by a noisy labeler.

    Like people, the labeler is not sure of close calls: it prefers the first response with
    probability sigmoid(score_first - score_second) (the Bradley-Terry model the pairwise loss fits)."""
    prompts = make_prompts(n, rng)
    first = torch.cat([prompts, random_responses(n, rng)], 1)
    second = torch.cat([prompts, random_responses(n, rng)], 1)
    p_first = torch.sigmoid((labeler_scores(first) - labeler_scores(second)).float())
    first_chosen = torch.as_tensor(rng.random(n)) < p_first
    chosen = torch.where(first_chosen.unsqueeze(1), first, second)
    rejected = torch.where(first_chosen.unsqueeze(1), second, first)
    return chosen, rejected


def to_text(sequence: torch.Tensor) -> str:
    """'3 8 1 | 2 5 7 9 <eos>': the prompt's digits, then the response, padding left out."""
    names = [str(t) if t < DIGITS else {BOS: "", EOS: "<eos>", PAD: ""}[t] for t in sequence.tolist()]
    prompt, response = names[1:PROMPT_LEN], [name for name in names[PROMPT_LEN:] if name]
    return " ".join(prompt) + " | " + " ".join(response)


# The model: one class for all four roles. A tiny causal language model (embedding, GRU, linear head);
# its output at position t has read tokens 0..t only. With VOCAB outputs it is a policy (the actor,
# and its frozen copy, the reference); with 1 output, a scalar per position: the reward model, the critic.
class TinyLM(nn.Module):
    def __init__(self, n_outputs: int, embed_size: int = 32, hidden_size: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed_size)
        self.gru = nn.GRU(embed_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, n_outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(self.embed(tokens))  # (batch, seq_len, hidden)
        return self.head(hidden)  # (batch, seq_len, n_outputs)


def response_outputs(model: TinyLM, sequences: torch.Tensor) -> torch.Tensor:
    """The model's outputs at the positions that choose the response tokens: (batch, RESPONSE_LEN, n_outputs).

    Position t chooses token t + 1, so the prompt's last position chooses the first response token
    and the last position chooses nothing. Cutting the prompt off here is the prompt's mask
    (DeepSpeed-Chat: [:, start:] with start = prompt length - 1; TRL: [:, context_length - 1 : -1])."""
    return model(sequences)[:, PROMPT_LEN - 1 : -1]


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) from logits (batch, len, vocab) and tokens (batch, len): (batch, len)."""
    return F.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def reward_scores(reward_model: TinyLM, sequences: torch.Tensor) -> torch.Tensor:
    """The reward model's score of each sequence, read at its last response token (<eos>): (batch,)."""
    last = PROMPT_LEN + response_mask(sequences[:, PROMPT_LEN:]).sum(1) - 1  # index in the sequence
    return reward_model(sequences).squeeze(-1).gather(1, last.unsqueeze(1)).squeeze(1)


# Stage 1: supervised fine-tuning, cross-entropy on the response tokens (the prompt is given, not learned)
def sft_loss(policy: TinyLM, sequences: torch.Tensor) -> torch.Tensor:
    responses = sequences[:, PROMPT_LEN:]
    mask = response_mask(responses)
    token_losses = F.cross_entropy(response_outputs(policy, sequences).transpose(1, 2), responses, reduction="none")
    return token_losses[mask].mean()  # padding after <eos> is not text to imitate


def train_sft(cfg: Config, rng: np.random.Generator) -> TinyLM:
    policy = TinyLM(VOCAB)
    optimizer = ClippedAdam(policy.parameters(), lr=cfg.sft_learning_rate)
    for step in range(cfg.sft_steps):
        prompts, responses = make_prompts(cfg.sft_batch_size, rng), random_responses(cfg.sft_batch_size, rng)
        demonstrations = torch.cat([prompts, responses], 1)  # (batch, SEQ_LEN)
        loss = sft_loss(policy, demonstrations)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"SFT: {cfg.sft_steps} steps, final loss {loss.item():.3f} nats per response token")
    return policy


# Stage 2: the reward model, pairwise: maximise log sigmoid(r_chosen - r_rejected) (DeepSpeed-Chat step 2)
def reward_model_loss(reward_model: TinyLM, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(reward_scores(reward_model, chosen) - reward_scores(reward_model, rejected)).mean()


def reward_model_accuracy(reward_model: TinyLM, chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    with torch.no_grad():
        return (reward_scores(reward_model, chosen) > reward_scores(reward_model, rejected)).float().mean().item()


def train_reward_model(cfg: Config, rng: np.random.Generator) -> tuple[TinyLM, float]:
    chosen, rejected = make_preference_pairs(cfg.rm_pairs, rng)
    heldout_chosen, heldout_rejected = make_preference_pairs(cfg.rm_heldout_pairs, rng)
    reward_model = TinyLM(1)
    optimizer = ClippedAdam(reward_model.parameters(), lr=cfg.rm_learning_rate)
    for step in range(cfg.rm_steps):
        batch = torch.arange(step * cfg.rm_batch_size, (step + 1) * cfg.rm_batch_size) % cfg.rm_pairs  # in order
        loss = reward_model_loss(reward_model, chosen[batch], rejected[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = reward_model_accuracy(reward_model, heldout_chosen, heldout_rejected)
    # the best a reward model can do: the labeler's own scores (a tie: a coin)
    labeler_margin = labeler_scores(heldout_chosen) - labeler_scores(heldout_rejected)
    labeler_accuracy = ((labeler_margin > 0).float() + 0.5 * (labeler_margin == 0).float()).mean().item()
    print(f"reward model: {cfg.rm_steps} steps on {cfg.rm_pairs} pairs, final loss {loss.item():.3f}; accuracy on "
          f"{cfg.rm_heldout_pairs} held-out pairs {accuracy:.1%} (the labeler's own score: {labeler_accuracy:.1%})")
    return reward_model, accuracy


# Stage 3: PPO. Generation samples one token per step; everything else is one pass over whole sequences.
@torch.no_grad()
def generate(policy: TinyLM, prompts: torch.Tensor) -> torch.Tensor:
    """Sample a response for each prompt: (batch, SEQ_LEN). After <eos> every token is <pad>.

    No cache: each step reruns the model over the sequence so far (12 tokens at most)."""
    sequences = prompts
    ended = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(RESPONSE_LEN):
        next_token_logits = policy(sequences)[:, -1]  # (batch, vocab)
        token = torch.multinomial(F.softmax(next_token_logits, dim=-1), 1).squeeze(1)  # = Categorical(logits).sample()
        token = torch.where(ended, PAD, token)
        ended |= token == EOS
        sequences = torch.cat([sequences, token.unsqueeze(1)], 1)
    return sequences


class TokenAgent(nn.Module):
    """ppo.py's Agent interface for a language model: one action per response token.

    get_action_and_value scores whole sequences in one pass and returns one entry per response token
    that the mask keeps, flattened over the batch. ppo_loss's plain .mean() is then a mean over the
    response tokens of the minibatch (DeepSpeed-Chat's sum(x * mask) / mask.sum(), TRL's masked_mean),
    and its advantage normalisation whitens over those tokens only."""

    def __init__(self, policy: TinyLM, critic: TinyLM):
        super().__init__()
        self.policy, self.critic = policy, critic  # separate networks, as ppo.py's actor and critic

    def score(self, sequences: torch.Tensor):
        """log pi of each response token, the entropy and V before it: each (batch, RESPONSE_LEN)."""
        log_probs = F.log_softmax(response_outputs(self.policy, sequences), dim=-1)  # (batch, RESPONSE_LEN, vocab)
        log_prob = log_probs.gather(-1, sequences[:, PROMPT_LEN:].unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        value = response_outputs(self.critic, sequences).squeeze(-1)
        return log_prob, entropy, value

    def get_action_and_value(self, sequences: torch.Tensor, responses: torch.Tensor, memory=None):
        """(action, log_prob, entropy, value) of each kept response token, each (tokens,). (memory: ppo.py's
        --recurrent state, which ppo_loss passes on; None here: the transformer reads the whole sequence.)"""
        log_prob, entropy, value = self.score(sequences)
        mask = response_mask(responses)
        return responses[mask], log_prob[mask], entropy[mask], value[mask]


def token_rewards(logprobs, ref_logprobs, scores, mask, kl_coef: float, clip_reward: float) -> torch.Tensor:
    """Per-token rewards (batch, RESPONSE_LEN): -kl_coef * (log pi - log pi_ref) at every response token,
    plus the reward model's clipped score at the last one; 0 on padding (DeepSpeed-Chat's compute_rewards)."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = mask.sum(1) - 1
    rewards[torch.arange(len(rewards)), last] += scores.clamp(-clip_reward, clip_reward)
    return rewards


def token_advantages(rewards, values, mask, gamma: float, gae_lambda: float):
    """ppo.py's compute_gae over the response tokens: positions are its time steps, sequences its envs.

    The last kept token terminates its sequence's episode (nothing follows: V after it is 0, and
    the padding after it cannot reach back). Returns (advantages, returns), each (batch, RESPONSE_LEN);
    the entries on padding are meaningless and masked out of every loss."""
    terminations = F.one_hot(mask.sum(1) - 1, RESPONSE_LEN).bool()  # (batch, RESPONSE_LEN)
    no_truncations = np.zeros((RESPONSE_LEN, len(rewards)), dtype=bool)
    next_value = np.zeros(len(rewards), dtype=np.float32)  # after the last position: never used, every episode ended
    advantages = compute_gae(rewards.T.numpy(), values.T.numpy(), next_value, terminations.T.numpy(), no_truncations,
                             gamma, gae_lambda)  # (RESPONSE_LEN, batch): time first, as ppo.py's rollout
    advantages = torch.as_tensor(advantages.T.copy())
    return advantages, advantages + values


def train_ppo(cfg: Config, policy: TinyLM, reference: TinyLM, reward_model: TinyLM, rng: np.random.Generator):
    """PPO on generated responses. Trains `policy` in place; returns the history, one dict per iteration."""
    # The critic starts as the reward model, as in DeepSpeed-Chat and TRL: it already scores whole responses.
    critic = copy.deepcopy(reward_model).requires_grad_(True)
    agent = TokenAgent(policy, critic)
    optimizer = ClippedAdam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5, max_grad_norm=cfg.max_grad_norm)
    history = []
    for iteration in range(1, cfg.ppo_iterations + 1):
        # ROLLOUT (DeepSpeed-Chat's generate_experience): sample responses, then one batched pass of the
        # policy, the reference, the critic and the reward model over the whole sequences
        sequences = generate(policy, make_prompts(cfg.rollout_batch_size, rng))  # (batch, SEQ_LEN)
        responses = sequences[:, PROMPT_LEN:]  # the actions: (batch, RESPONSE_LEN)
        mask = response_mask(responses)  # padding after <eos> is no action
        with torch.no_grad():
            logprobs, _, values = agent.score(sequences)  # pi_old's log-probs, V: (batch, RESPONSE_LEN)
            ref_logprobs = gather_logprobs(response_outputs(reference, sequences), responses)
            scores = reward_scores(reward_model, sequences)  # (batch,)

        # REWARDS (compute_rewards): the KL penalty on every token, the score on the last
        rewards = token_rewards(logprobs, ref_logprobs, scores, mask, cfg.kl_coef, cfg.clip_reward)

        # ADVANTAGES (get_advantages_and_returns): GAE backwards over each response's tokens, gamma 1
        advantages, returns = token_advantages(rewards, values, mask, cfg.gamma, cfg.gae_lambda)

        # UPDATE: ppo.py's loop, over minibatches of whole sequences; ppo_loss sees the kept tokens only
        b_inds = np.arange(cfg.rollout_batch_size)
        update_stats = []
        for epoch in range(cfg.update_epochs):
            rng.shuffle(b_inds)
            for mb_inds in np.array_split(b_inds, cfg.num_minibatches):
                mb_mask = mask[mb_inds]
                loss, stats = ppo_loss(agent, sequences[mb_inds], responses[mb_inds], logprobs[mb_inds][mb_mask],
                                       values[mb_inds][mb_mask], advantages[mb_inds][mb_mask],
                                       returns[mb_inds][mb_mask], cfg)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()  # = clip_grad_norm_(agent.parameters(), max_grad_norm); Adam step
                update_stats.append(stats)

        # LOGGING: what the reward model says, how far the policy went from the reference, what the labeler says
        history.append(dict(
            iteration=iteration,
            score=scores.mean().item(),  # the reward model's, unclipped
            kl=((logprobs - ref_logprobs) * mask).sum(1).mean().item(),  # per response: sum of log pi - log pi_ref
            labeler=labeler_scores(sequences).float().mean().item(),
            length=mask.sum(1).float().mean().item(),  # tokens per response, <eos> included
            approx_kl=update_stats[-1]["approx_kl"].item(),  # pi_old to pi_new, ppo.py's (r - 1) - log r
            clipfrac=torch.stack([s["clipfrac"] for s in update_stats]).mean().item(),
        ))
        if iteration == 1 or iteration % 10 == 0:
            print("iter {iteration:3d}  score {score:6.2f}  KL {kl:5.2f}  labeler {labeler:5.2f}  length {length:4.2f}"
                  "  approx_kl {approx_kl:.4f}  clipfrac {clipfrac:.3f}".format(**history[-1]))
    return history


def show_samples(title: str, policy: TinyLM, reward_model: TinyLM, prompts: torch.Tensor) -> None:
    sequences = generate(policy, prompts)
    with torch.no_grad():
        scores = reward_scores(reward_model, sequences)
    print(title)
    for sequence, score, labeler in zip(sequences, scores, labeler_scores(sequences)):
        print(f"  {to_text(sequence):32s} reward model {score.item():6.2f}   labeler {labeler.item():3d}")


def plot_history(history: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [h["iteration"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(iterations, [h["score"] for h in history], label="reward model's score")
    left.plot(iterations, [h["labeler"] for h in history], label="labeler's score (hidden)")
    left.set_xlabel("PPO iteration")
    left.set_title("mean score of the batch's responses")
    left.legend()
    right.plot(iterations, [h["kl"] for h in history], color="C2")
    right.set_xlabel("PPO iteration")
    right.set_title("KL(pi || pi_ref) per response, nats")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def main(cfg: Config) -> dict:
    if cfg.plot_path:  # checked before any work, as ppo.py checks its extras
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit("error: --plot-path needs matplotlib: pip install -r requirements-dev.txt (or --plot-path None)")
    torch.set_num_threads(1)  # as ppo.py: at these sizes more threads only add synchronisation
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    start = time.time()

    policy = train_sft(cfg, rng)  # stage 1
    reference = copy.deepcopy(policy).requires_grad_(False)  # frozen: the KL penalty's anchor
    reward_model, accuracy = train_reward_model(cfg, rng)  # stage 2
    reward_model.requires_grad_(False)  # PPO reads its score, never trains it
    print(f"stages 1 and 2: {time.time() - start:.1f} s")

    sample_prompts = make_prompts(6, np.random.default_rng(cfg.seed + 1000))
    show_samples("samples before PPO (the SFT policy):", policy, reward_model, sample_prompts)
    history = train_ppo(cfg, policy, reference, reward_model, rng)  # stage 3
    show_samples("samples after PPO:", policy, reward_model, sample_prompts)
    first, last = history[0], history[-1]
    print(f"PPO: reward model's score {first['score']:.2f} -> {last['score']:.2f}, labeler's {first['labeler']:.2f} "
          f"-> {last['labeler']:.2f}, KL to the reference {last['kl']:.2f} nats per response")
    print(f"total: {time.time() - start:.1f} s")
    if cfg.plot_path:
        plot_history(history, cfg.plot_path)
    return dict(history=history, reward_model_accuracy=accuracy)


if __name__ == "__main__":
    main(tyro.cli(Config))
