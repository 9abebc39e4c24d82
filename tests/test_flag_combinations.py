"""Any flag combination is safe (issue #20): hypothesis draws flags and envs, and runs ppo.main on them.

For every draw, in an empty directory, ppo.main(argv) returns
  0  and leaves exactly one run directory, consistent with the flags: TensorBoard events with one
     update per iteration, at the learning rate the schedule gives, and only finite scalars;
     checkpoint.pt (unless --checkpoint-every 0), which ppo.load_checkpoint reads, with the flags
     given over the defaults (Args, BOX_DEFAULTS, PRESETS) as its args; a model that loads into an
     Agent (--save-model); the evaluation's returns (--eval-episodes); nothing else in the directory;
  2  with one line on stderr, "error: ...", and nothing written: no runs/, no videos/;
  1  only when training diverged ("error: iteration N: ... is not finite"), and only for flags
     that may make it diverge (a learning rate of 1e30, say).
No exception escapes main, and no run outlasts the time limit. The flags the rules refuse (the
docs', and check_args's one-line errors) are refused; the others are accepted, except for a few
where either is right (a negative seed, say; `may_refuse`).

test_any_run_name_*: the same, for the flags that name the run directory (--exp-name, --seed).
test_resume_*: a run stopped by Ctrl-C (or finished), then --resume with flags drawn again: the
resumed run goes on to the run's end, at the learning rate the flags given say, or is refused in
one line and leaves the run directory as it was, byte for byte.
test_eval_only_*: --eval-only with a saved model (or a file that is none) and any other flags: one
new run directory with the evaluation's returns, or refused in one line.

Two kinds of input are left out (`known_issue`): an endless evaluation (15 s; test_edge_cases.py checks
its one-line exit with a lower step limit) and MuJoCo asked to film without OpenGL (refused in one line,
but MuJoCo aborts the test process at a second try).

Profiles: "ci" (the default: 10 examples a test, derandomized, about 10 s in all), and "long":
    HYPOTHESIS_PROFILE=long OMP_NUM_THREADS=1 python -m pytest tests/test_flag_combinations.py
HYPOTHESIS_EXAMPLES sets the long profile's number of examples (per test, 2000 by default; about 0.3 s
each, 1 s for a resume), HYPOTHESIS_DATABASE where it keeps failing examples (a directory under /tmp
by default); FLAG_COMBINATIONS_LOG names a file to which every run that does not exit 0 is appended,
as a line of JSON.
"""

import contextlib
import hashlib
import io
import json
import math
import os
import signal
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.database import DirectoryBasedExampleDatabase

import ppo
import toy_envs
from conftest import read_scalars

# Profiles. The ci one is deterministic (derandomize) and keeps no database (nothing written in the checkout).
settings.register_profile("ci", max_examples=10, derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "2000")), deadline=None,
                          database=DirectoryBasedExampleDatabase(os.environ.get("HYPOTHESIS_DATABASE", os.path.join(
                              tempfile.gettempdir(), "ppo-flag-combinations-db"))),
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
TIME_LIMIT_S = 30  # one ppo.main call; the slowest draws take a few seconds on a slow 2-core machine
INF, NAN = math.inf, math.nan


@dataclass(frozen=True)
class EnvCase:
    env_id: str
    box: bool | None  # a Box action space; None: the env is refused (action or observation space, id)
    maybe: bool = False  # either accepted or refused is right: spaces ppo.py may not support
    image: bool = False  # observations are images: IMAGE_DEFAULTS apply


ENVS = [
    EnvCase("CartPole-v1", False),
    EnvCase("Pendulum-v1", True),
    EnvCase("toy_envs:Counter-v0", False),
    EnvCase("toy_envs:Counter1-v0", False),  # every step ends an episode
    EnvCase("toy_envs:BoxAction-v0", True),
    EnvCase("toy_envs:ShiftedDiscrete-v0", False),
    EnvCase("toy_envs:MatrixAction-v0", True),
    EnvCase("Acrobot-v1", False),
    EnvCase("MountainCarContinuous-v0", True),
    EnvCase("InvertedPendulum-v5", True),
    EnvCase("toy_envs:Discrete1-v0", False),
    EnvCase("toy_envs:DiscreteNegative-v0", False),
    EnvCase("toy_envs:UnboundedBox-v0", True),
    EnvCase("toy_envs:HalfBoundedBox-v0", True),
    EnvCase("toy_envs:Float64Spaces-v0", True),
    EnvCase("toy_envs:Uint8Obs-v0", False),
    EnvCase("toy_envs:WideObs-v0", True),
    EnvCase("toy_envs:Endless-v0", False),
    EnvCase("toy_envs:ScalarBox-v0", True),  # a Box of shape (): the agent acts on a vector of 1
    EnvCase("toy_envs:ImageObs-v0", False, image=True),  # 8x8x3 bytes: the small CNN
    EnvCase("toy_envs:EmptyObs-v0", None),
    EnvCase("toy_envs:EmptyBox-v0", None),
    EnvCase("toy_envs:MultiBinary-v0", False),  # any gymnasium space (issue #32): MultiBinary actions
    EnvCase("toy_envs:DictObs-v0", False),
    EnvCase("toy_envs:SameStep-v0", None),
    EnvCase("toy_envs:ColumnObs-v0", False),  # a Box (3, 1), flattened
    EnvCase("toy_envs:ScalarObs-v0", False),  # a Box (), as a vector of 1
    EnvCase("FrozenLake-v1", False),  # Discrete observations: one-hots
    EnvCase("toy_envs:DiscreteObs-v0", False),
    EnvCase("toy_envs:MultiDiscreteObs-v0", False),
    EnvCase("toy_envs:MultiBinaryObs-v0", False),
    EnvCase("toy_envs:TupleObs-v0", False),
    EnvCase("toy_envs:NestedObs-v0", False),  # a nested Dict with an image, a Tuple, every kind of part
    EnvCase("toy_envs:MultiDiscreteAction-v0", False),
    EnvCase("toy_envs:MultiDiscreteGridAction-v0", False),
    EnvCase("toy_envs:MultiBinaryGridAction-v0", False),
    EnvCase("toy_envs:MaskedInfo-v0", False),  # an action mask in the info, as gymnasium's toy-text envs
    EnvCase("toy_envs:MaskedDict-v0", False),  # an action mask in a Dict, MultiDiscrete actions
    EnvCase("toy_envs:TextObs-v0", None),
    EnvCase("toy_envs:DictAction-v0", None),
    EnvCase("toy_envs:WrongMask-v0", None),
    EnvCase("CartPol-v1", None),
    EnvCase("no_such_module:Env-v0", None),
]
ACCEPTED_ENVS = [env for env in ENVS if env.box is not None and not env.maybe]
RENDERS = ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCarContinuous-v0", "FrozenLake-v1",  # rgb_array
           *[f"toy_envs:{name}-v0" for name in ["DiscreteObs", "MultiDiscreteObs", "MultiBinaryObs", "TupleObs",
                                               "NestedObs", "MultiDiscreteAction", "MultiDiscreteGridAction",
                                               "MultiBinaryGridAction", "MaskedInfo", "MaskedDict"]]]  # without OpenGL


def some(*values):
    return st.sampled_from(values)


# Each flag: (usual values, odd ones). Hypothesis shrinks toward the first, so a minimal failing argv
# keeps an odd value only where it matters.
FLAGS = {
    "num_envs": (st.integers(1, 4), some(0, -1, 16)),
    "num_steps": (st.integers(1, 16), some(0, -3, 64)),
    "num_minibatches": (st.integers(1, 4), some(0, -1, 8, 32)),
    "update_epochs": (st.integers(1, 3), some(0, -1, 6)),
    "learning_rate": (some(2.5e-4, 1e-3, 3e-2) | st.floats(1e-6, 1e-2),
                      some(0.0, -1e-3, 1.0, 1e3, 1e30, 1e-300, INF, -INF, NAN)),
    "anneal_lr": (st.booleans(), st.nothing()),
    "gamma": (some(0.99, 0.0, 1.0) | st.floats(0, 1), some(-0.1, 1.1, 1 + 1e-9, NAN, INF, -0.0)),
    "gae_lambda": (some(0.95, 0.0, 1.0) | st.floats(0, 1), some(-0.1, 1.1, NAN, -INF)),
    "adv_estimator": (some("gae", "mc"), st.nothing()),
    "norm_adv": (st.booleans(), st.nothing()),
    "clip_coef": (some(0.2, 0.1, 0.5) | st.floats(1e-3, 0.999), some(0.0, 1.0, -0.2, 2.0, 1e-300, NAN, INF)),
    "clip_vloss": (st.booleans(), st.nothing()),
    "ent_coef": (some(0.0, 0.01, 0.1), some(-0.01, 10.0, 1e6, INF, NAN)),
    "vf_coef": (some(0.5, 0.0, 1.0), some(-0.5, 100.0, 1e10, INF, NAN)),
    "max_grad_norm": (some(0.5, 1e-3, 10.0), some(0.0, -1.0, 1e-30, 1e30, INF, NAN)),
    "target_kl": (some(None, 0.01, 0.1), some(0.0, -0.01, 1e-12, INF, NAN)),
    "mask_actions": (st.booleans(), st.nothing()),
    "norm_obs": (st.booleans(), st.nothing()),
    "norm_reward": (st.booleans(), st.nothing()),
    "clip_action": (st.booleans(), st.nothing()),
    "hidden_size": (some(64, 1, 7, 256), some(0, -1)),
    "activation": (some("tanh", "relu"), st.nothing()),
    "ortho_init": (st.booleans(), st.nothing()),
    "log_std_init": (some(0.0, -2.0, 1.0), some(INF, -INF, NAN)),
    "checkpoint_every": (some(0, 1, 2, 25), some(-1, 10**9)),
    "eval_episodes": (some(0, 1, 2), some(-1, 5)),
    "save_model": (st.booleans(), st.nothing()),
    "preset": (some("none", "tuned"), st.nothing()),
    "exp_name": (some("ppo", "run-2", "ünï", "two words", "名前"),
                 some("", ".hidden", "..", "a/b", "-dash", "--", "a:b", "new\nline", "tab\there", "a\\b", "$HOME",
                      "*", "None", "x" * 200, "é" * 120, "|pipe|")
                 | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
                 | st.text("xé名", min_size=70, max_size=130)),  # 70 to 390 bytes: some too long for a directory name
    "seed": (st.integers(0, 1000), some(-1, -(2**31), 2**32 - 1, 2**32, 2**63, 10**30)),
    "torch_deterministic": (st.booleans(), st.nothing()),
    "backend": (some("auto", "gloo"), some("nccl")),
    "capture_video": (some(False), some(True)),  # about a second a run: an odd value, drawn less often
    # flags of other modes: refused in a training run (an empty --resume too)
    "eval_only": (some(False), some(True)),
    "model_path": (some(None), some("model.cleanrl_model", "")),
    "resume": (some(None), some("nowhere", "runs", ".", "/dev/null", "")),
}
POSITIVE = ["total_timesteps", "learning_rate", "num_envs", "num_steps", "num_minibatches", "update_epochs",
            "clip_coef", "max_grad_norm", "hidden_size"]
NON_NEGATIVE = ["ent_coef", "vf_coef", "checkpoint_every", "eval_episodes"]


def flag_value(name, odd=True):
    usual, odd_values = FLAGS[name]
    return odd_values if odd and not odd_values.is_empty else usual


def to_argv(given: dict) -> list[str]:
    argv = []
    for name, value in given.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            argv.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return argv


def defaults_for(env: EnvCase, preset: str) -> dict:
    """The values of the flags not given (parse_args's rule: Args, BOX_DEFAULTS for Box, then PRESETS)."""
    defaults = asdict(ppo.Args())
    if env.box:
        defaults.update(ppo.BOX_DEFAULTS)
    if env.image:
        defaults.update(ppo.IMAGE_DEFAULTS)
    if preset == "tuned" and env.env_id in ppo.PRESETS:
        defaults.update(ppo.PRESETS[env.env_id])
    return defaults


@st.composite
def timesteps(draw, num_envs, num_steps, odd=True):
    """--total-timesteps: a few iterations (one for big batches), or an odd value."""
    batch = num_envs * num_steps
    if batch <= 0 or (odd and draw(st.integers(0, 99)) >= 90):
        return draw(some(0, -1, max(batch - 1, 1), batch))
    iterations = draw(st.integers(1, 1 if batch > 1024 else (2 if batch > 256 else 3)))
    return iterations * batch + draw(st.integers(0, batch - 1))


class Draw:
    """A drawn run: its argv; not shown, its env and the flags it must run with (the defaults, then those given)."""

    def __init__(self, argv: list, env: EnvCase, args: dict, given: dict):
        self.argv, self.env, self.args, self.given = argv, env, args, given

    def __repr__(self):
        return f"Draw(argv={self.argv!r})"


@st.composite
def fresh_runs(draw, envs=ENVS, odd=True, names=None, env=None):
    """A training run's flags: some of them given, usual values, and with odd=True, odd values for up to two."""
    env = env or draw(st.sampled_from(ACCEPTED_ENVS) | st.sampled_from(envs))  # half of them an env it supports
    names = draw(st.lists(st.sampled_from(names or list(FLAGS)), unique=True, max_size=12))
    odd_names = draw(st.lists(st.sampled_from(names), unique=True, max_size=2)) if odd and names else []
    given = {"env_id": env.env_id}
    for name in FLAGS:  # in FLAGS's order, whatever order they were drawn in
        if name in names:
            given[name] = draw(flag_value(name, name in odd_names))
    given["cuda"] = False
    args = defaults_for(env, given.get("preset", "none")) | given
    given["total_timesteps"] = args["total_timesteps"] = draw(timesteps(args["num_envs"], args["num_steps"], odd))
    return Draw(to_argv(given), env, args, given)


def refusal(args: dict, env: EnvCase) -> str | None:
    """Why the rules refuse these flags (check_args's one-line errors, the docs'), or None."""
    if env.box is None:
        return "env"
    if args["resume"] == "":
        return "empty resume"
    if args["resume"]:  # nothing to resume in an empty directory
        return "no checkpoint to resume"
    if args["eval_only"] or args["model_path"] is not None:
        return "eval-only flags"
    if args["backend"] == "nccl":  # without CUDA (--no-cuda)
        return "nccl without CUDA"
    if args["preset"] == "tuned" and args["env_id"] not in ppo.PRESETS:
        return "no preset"
    for name in POSITIVE:
        if not args[name] > 0:
            return f"{name} not positive"
    for name in NON_NEGATIVE:
        if not args[name] >= 0:
            return f"{name} negative"
    for name in ["gamma", "gae_lambda"]:
        if not 0 <= args[name] <= 1:
            return f"{name} outside [0, 1]"
    if not args["clip_coef"] < 1:
        return "clip_coef >= 1"
    if args["target_kl"] is not None and not args["target_kl"] > 0:
        return "target_kl not positive"
    name = args["exp_name"]
    if not name or "/" in name or name.startswith("."):
        return "exp_name"
    if args["num_envs"] * (args["num_steps"] // 2) < 2 * args["num_minibatches"]:
        return "minibatches too small"
    if args["total_timesteps"] < args["num_envs"] * args["num_steps"]:
        return "total_timesteps below a batch"
    if len(run_name_of(args, 1_000_000_000).encode()) + len("_999") > 255:  # room for new_run_dir's suffix
        return "run directory name too long"
    return None


def may_refuse(args: dict, env: EnvCase) -> bool:
    """Flags that ppo.py may refuse, or accept (and then must run): the rules leave them open."""
    return (env.maybe or not 0 <= args["seed"] < 2**32 or args["capture_video"] and env.env_id not in RENDERS
            or not all(math.isfinite(args[name]) for name in ["learning_rate", "ent_coef", "vf_coef", "log_std_init"]))


def may_diverge(args: dict) -> bool:
    """Flags with which a non-finite loss is no surprise: training may stop with exit 1."""
    return (not all(math.isfinite(args[name]) for name in ["learning_rate", "ent_coef", "vf_coef", "max_grad_norm"])
            or args["learning_rate"] >= 1 or args["ent_coef"] >= 10 or args["vf_coef"] >= 100
            or args["max_grad_norm"] >= 1e6 and args["learning_rate"] >= 1e-2)


def known_issue(args: dict, env: EnvCase) -> str | None:
    """Inputs left out of the search: a MuJoCo env asked to film without OpenGL. ppo.py refuses it in one
    line (check_renders), but MuJoCo aborts the whole process at a second try in the same process."""
    if env.env_id == "toy_envs:Endless-v0" and args["eval_episodes"] > 0:
        return "endless evaluation"  # exits 1 after 100,000 steps, 15 s (test_edge_cases checks it with 50)
    if args["capture_video"] and env.env_id not in RENDERS and "Pendulum-v5" in env.env_id:
        return "mujoco cannot render"  # KNOWN: a SIGABRT of the test process, not of a command line
    return None


def run_name_of(args: dict, when: int) -> str:
    return f"{args['env_id'].replace('/', '-').replace(':', '-')}__{args['exp_name']}__{args['seed']}__{when}"


# Running ppo.main


class Hang(BaseException):
    """The time limit passed (a BaseException: no `except Exception` in ppo.py swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Hang:
        raise AssertionError(f"hang: no result after {seconds} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def ctrl_c_at(iteration: int | None):
    """Send this process SIGINT (Ctrl-C) when training has done this iteration's update (None: never)."""
    real_check = ppo.check_finite

    def check_then_signal(it, stats, agent):
        real_check(it, stats, agent)
        if it == iteration:
            os.kill(os.getpid(), signal.SIGINT)

    ppo.check_finite = check_then_signal
    try:
        yield
    finally:
        ppo.check_finite = real_check


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def run_main(argv: list[str], stop_at: int | None = None) -> Result:
    """ppo.main(argv) in the current directory, its output captured; an exception escapes (the test fails)."""
    toy_envs.BoxActionEnv.received_actions.clear()
    toy_envs.ShiftedDiscreteEnv.received_actions.clear()
    out, err = io.StringIO(), io.StringIO()
    with (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(),
          time_limit(TIME_LIMIT_S), ctrl_c_at(stop_at)):
        warnings.simplefilter("ignore")
        rc = ppo.main(argv)
    result = Result(rc, out.getvalue(), err.getvalue())
    if currently_in_test_context():  # (not in the fixture that trains models)
        event(f"exit {rc}")
    if rc != 0 and os.environ.get("FLAG_COMBINATIONS_LOG"):
        with open(os.environ["FLAG_COMBINATIONS_LOG"], "a") as f:
            f.write(json.dumps({"argv": argv, "rc": rc, "stderr": result.stderr}) + "\n")
    return result


@pytest.fixture(scope="module")
def example_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("examples")


@contextlib.contextmanager
def empty_directory(base):
    """Each example in an empty directory of its own (the cwd), removed afterwards."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(previous)


def files_of(directory: Path) -> dict:
    """{relative path: sha256 of its bytes} of every file under directory."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# The checks


def check_refused(result: Result, cwd: Path, before: dict):
    """Exit 2, one line "error: ...", and the directory as it was (before: files_of(cwd) before the run)."""
    assert result.rc == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in cwd.iterdir()) == sorted({Path(name).parts[0] for name in before}), \
        "a refused run left something behind"
    assert files_of(cwd) == before, "a refused run changed files"


def check_diverged(result: Result, run_dir: Path, args: dict):
    assert result.rc == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: iteration ") and "not finite" in result.stderr, result.stderr
    assert may_diverge(args), f"training diverged with moderate flags: {result.stderr.strip()}"
    if (run_dir / "checkpoint.pt").exists():  # the last good one
        checkpoint = ppo.load_checkpoint(str(run_dir))
        assert all(torch.isfinite(t).all() for t in checkpoint["agent"].values())


def learning_rates(args: dict, iterations) -> list[float]:
    num_iterations = args["total_timesteps"] // (args["num_envs"] * args["num_steps"])
    if not args["anneal_lr"]:
        return [args["learning_rate"] for _ in iterations]
    return [(1.0 - (i - 1.0) / num_iterations) * args["learning_rate"] for i in iterations]


def check_scalars(scalars: dict, args: dict, resumed_from: int | None = None, evaluations: tuple = (0, 0)):
    """One update logged per iteration, at the schedule's learning rate (from the resumed iteration on:
    the resumed run's flags), every scalar finite, and as many evaluation returns as evaluated."""
    batch = args["num_envs"] * args["num_steps"]
    num_iterations = args["total_timesteps"] // batch
    steps = [step for step, _ in scalars["losses/approx_kl"]]
    assert steps == [batch * i for i in range(1, num_iterations + 1)], "not one update logged per iteration"
    logged_rates = [value for _, value in scalars["charts/learning_rate"]]
    first = resumed_from or 0
    expected = learning_rates(args, range(first + 1, num_iterations + 1))
    assert logged_rates[first:] == pytest.approx(np.float32(expected).tolist(), rel=1e-6, abs=1e-37), \
        "logged learning rates are not the schedule's for these flags"
    for tag, values in scalars.items():
        if tag == "losses/explained_variance":
            continue  # NaN by design when the returns do not vary (as CleanRL)
        assert all(math.isfinite(value) for _, value in values), f"{tag} not finite: {values}"
    low, high = evaluations
    assert low <= len(scalars.get("eval/episodic_return", [])) <= high, "not as many evaluation returns as episodes"


def check_model(model_path: Path, args: dict):
    state = torch.load(model_path, weights_only=True)
    assert ("obs_rms.mean" in state) == args["norm_obs"] and ("obs_rms.var" in state) == args["norm_obs"]
    assert all(torch.isfinite(t).all() for t in state.values())
    state = {key: value for key, value in state.items() if not key.startswith("obs_rms.")}
    envs = ppo.make_envs(ppo.Args(**dict(args, norm_obs=False, norm_reward=False)), 1)
    agent = ppo.Agent(envs)
    envs.close()
    agent.load_state_dict(state)


def check_checkpoint(run_dir: Path, args: dict, iteration: int):
    checkpoint = ppo.load_checkpoint(str(run_dir))
    assert checkpoint["args"] == args, "the checkpoint's args are not the flags given over the defaults"
    assert checkpoint["iteration"] == iteration and checkpoint["run_name"] == run_dir.name
    assert checkpoint["global_step"] == iteration * args["num_envs"] * args["num_steps"]
    assert all(torch.isfinite(t).all() for t in checkpoint["agent"].values())


def check_trained(result: Result, cwd: Path, args: dict):
    """Exit 0, and one run directory that holds what these flags ask for."""
    assert result.rc == 0
    assert result.stderr == "", result.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"] + ["videos"] * args["capture_video"], \
        "not only runs/ (and videos/) was written"
    (run_dir,) = (cwd / "runs").iterdir()
    name, when = run_dir.name.rsplit("__", 1)
    assert run_dir.name == run_name_of(args, int(when)), "the run directory is not named after the flags"
    if args["capture_video"]:
        videos = cwd / "videos" / run_dir.name
        assert list(videos.glob("*.mp4")), "no video of training"
        assert bool(list(videos.glob("eval/*.mp4"))) == bool(args["eval_episodes"]), "no video of evaluation"
    files = {p.name for p in run_dir.iterdir()}
    events = {name for name in files if name.startswith("events.out.tfevents.")}
    expected = events | ({"checkpoint.pt"} if args["checkpoint_every"] else set()) | (
        {f"{args['exp_name']}.cleanrl_model"} if args["save_model"] else set())
    assert events and files == expected, f"run directory holds {sorted(files)}"
    num_iterations = args["total_timesteps"] // (args["num_envs"] * args["num_steps"])
    if args["checkpoint_every"]:
        check_checkpoint(run_dir, args, num_iterations)
    if args["save_model"]:
        check_model(run_dir / f"{args['exp_name']}.cleanrl_model", args)
    check_scalars(read_scalars(run_dir), args, evaluations=(args["eval_episodes"],) * 2)


def check_outcome(result: Result, cwd: Path, draw: Draw, before: dict):
    args, env = draw.args, draw.env
    refused_by_rule = refusal(args, env)
    if refused_by_rule:
        event(f"refused: {refused_by_rule}")
        assert result.rc == 2, f"accepted, though the rules refuse it ({refused_by_rule})"
        check_refused(result, cwd, before)
    elif result.rc == 2:
        assert may_refuse(args, env), f"refused valid flags: {result.stderr.strip()}"
        check_refused(result, cwd, before)
    elif result.rc == 1:
        (run_dir,) = (cwd / "runs").iterdir()
        check_diverged(result, run_dir, args)
    else:
        check_trained(result, cwd, args)


# The properties


@pytest.mark.slow
@pytest.mark.parametrize("odd", [False, True], ids=["usual-values", "odd-values"])
@given(data=st.data())
@settings(settings.get_profile(PROFILE))
def test_any_flags_train_or_are_refused_in_one_line(example_dirs, odd, data):
    draw = data.draw(fresh_runs(ENVS if odd else ACCEPTED_ENVS, odd=odd), label="run")
    assume(known_issue(draw.args, draw.env) is None)
    note(" ".join(draw.argv))
    event(draw.env.env_id)
    with empty_directory(example_dirs) as cwd:
        result = run_main(draw.argv)
        check_outcome(result, cwd, draw, {})


@pytest.mark.slow
@given(env=st.sampled_from(ACCEPTED_ENVS), exp_name=flag_value("exp_name", False) | flag_value("exp_name"),
       seed=flag_value("seed", False) | flag_value("seed"))
@settings(settings.get_profile(PROFILE))
def test_any_run_name_trains_or_is_refused_in_one_line(example_dirs, env, exp_name, seed):
    """The flags that name the run directory (and the saved model), on a run of one tiny iteration."""
    given = {"env_id": env.env_id, "exp_name": exp_name, "seed": seed, "num_envs": 1, "num_steps": 4,
             "num_minibatches": 1, "update_epochs": 1, "total_timesteps": 4, "checkpoint_every": 1,
             "save_model": True, "cuda": False}
    draw = Draw(to_argv(given), env, defaults_for(env, "none") | given, given)
    assume(known_issue(draw.args, env) is None)
    note(" ".join(draw.argv))
    with empty_directory(example_dirs) as cwd:
        check_outcome(run_main(draw.argv), cwd, draw, {})


# Resume: flags a resumed run cannot change (ppo.RESUME_FIXED, docs/checkpoints.md's list), and those it can.
FIXED = ["env_id", "seed", "num_envs", "num_steps", "total_timesteps", "exp_name", "gamma", "norm_obs",
         "norm_reward", "clip_action", "preset", "hidden_size", "activation", "ortho_init", "log_std_init"]
SAME = object()  # a fixed flag given on resume with the run's own value


class ResumeDraw:
    """The first run's argv; Ctrl-C after iteration stop_at (None: none); the resumed run's argv, where "{}"
    stands for the run's name and "{cwd}" for the directory it runs in; (not shown) the flags it gives."""

    def __init__(self, first: list, stop_at: int | None, resume: list, first_draw: Draw, given: dict):
        self.first, self.stop_at, self.resume, self.first_draw, self.given = first, stop_at, resume, first_draw, given

    def __repr__(self):
        return f"ResumeDraw(first={self.first!r}, stop_at={self.stop_at!r}, resume={self.resume!r})"


@st.composite
def resumes(draw):
    first = draw(fresh_runs(ACCEPTED_ENVS, odd=False, names=[name for name in FLAGS if name not in
                                                             ["seed", "exp_name", "preset"]]))
    args = first.args
    num_iterations = args["total_timesteps"] // (args["num_envs"] * args["num_steps"])
    stop_at = draw(st.none() | st.integers(1, num_iterations))
    names = draw(st.lists(st.sampled_from([name for name in FLAGS if name != "resume"] + ["total_timesteps"]),
                          unique=True, max_size=6))
    odd_names = draw(st.lists(st.sampled_from(names), unique=True, max_size=2)) if names else []
    given = {}
    for name in names:
        if name == "total_timesteps":
            given[name] = draw(st.just(SAME) | timesteps(args["num_envs"], args["num_steps"], name in odd_names))
        elif name in FIXED:
            given[name] = draw(st.just(SAME) | flag_value(name, name in odd_names))
        else:
            given[name] = draw(flag_value(name, name in odd_names))
        if given[name] is SAME:
            given[name] = args[name]
    path = draw(some("runs/{}", "runs/{}/", "runs/{}/checkpoint.pt", "./runs/{}", "{cwd}/runs/{}"))
    return ResumeDraw(first.argv, stop_at, [f"--resume={path}", *to_argv(given), "--no-cuda"], first, given)


@pytest.mark.slow
@given(draw=resumes())
@settings(settings.get_profile(PROFILE))
def test_resume_with_any_flags_goes_on_or_is_refused_in_one_line(example_dirs, draw):
    note(f"first: {' '.join(draw.first)}  (Ctrl-C after iteration {draw.stop_at})")
    note(f"then: {' '.join(draw.resume)}")
    args = draw.first_draw.args
    assume(refusal(args, draw.first_draw.env) is None)  # a first run that trains
    merged = args | draw.given
    assume(known_issue(args, draw.first_draw.env) is None and known_issue(merged, draw.first_draw.env) is None)
    with empty_directory(example_dirs) as cwd:
        first = run_main(draw.first, draw.stop_at)
        assert first.rc == (0 if draw.stop_at is None else 130), first.stderr
        (run_dir,) = (cwd / "runs").iterdir()
        before = files_of(cwd)
        argv = [draw.resume[0].replace("{cwd}", str(cwd)).replace("{}", run_dir.name), *draw.resume[1:]]
        result = run_main(argv)
        changed = [name for name in FIXED if name in draw.given and not draw.given[name] == args[name]]
        reason = ("no checkpoint" if not args["checkpoint_every"] else
                  f"changed {changed}" if changed else refusal(merged, draw.first_draw.env))
        if reason:
            event(f"resume refused: {reason}")
            assert result.rc == 2, f"resume accepted, though the rules refuse it ({reason})"
            check_refused(result, cwd, before)
            return
        if result.rc == 2:
            assert may_refuse(merged, draw.first_draw.env), f"refused valid flags: {result.stderr.strip()}"
            check_refused(result, cwd, before)
            return
        if result.rc == 1:
            check_diverged(result, run_dir, merged)
            return
        assert result.rc == 0 and result.stderr == "", result.stderr
        assert [p.name for p in (cwd / "runs").iterdir()] == [run_dir.name]
        assert sorted(os.listdir(cwd)) == ["runs"] + ["videos"] * merged["capture_video"]
        num_iterations = args["total_timesteps"] // (args["num_envs"] * args["num_steps"])
        resumed_from = num_iterations if draw.stop_at is None else draw.stop_at
        if resumed_from < num_iterations and merged["checkpoint_every"]:  # with --resume's path among its flags
            check_checkpoint(run_dir, dict(merged, resume=argv[0].split("=", 1)[1]), num_iterations)
        elif resumed_from == num_iterations:  # nothing trained: the run's checkpoint, its flags unchanged
            check_checkpoint(run_dir, args, num_iterations)
        else:  # --checkpoint-every 0: the run's last checkpoint, as it was
            assert files_of(cwd)["runs/" + run_dir.name + "/checkpoint.pt"] == \
                before["runs/" + run_dir.name + "/checkpoint.pt"]
        model = run_dir / f"{args['exp_name']}.cleanrl_model"
        first_saved = draw.stop_at is None and args["save_model"]
        assert model.exists() == (merged["save_model"] or first_saved)
        if model.exists():
            check_model(model, merged)
        # The evaluation is logged once: by the first run if it finished and evaluated, else by the resumed run.
        evaluated = args["eval_episodes"] if draw.stop_at is None and args["eval_episodes"] else merged["eval_episodes"]
        check_scalars(read_scalars(run_dir), merged, resumed_from, (evaluated, evaluated))


# --eval-only: a saved model evaluated with any flags. Models of two envs, trained once for the module.


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """{name: absolute path}: models of CartPole (trained with --norm-obs) and Pendulum (Box: --norm-obs
    by default), a checkpoint (not a model), a text file, and a path to nothing."""
    directory = tmp_path_factory.mktemp("models")
    previous = os.getcwd()
    os.chdir(directory)
    try:
        for env_id, flags in [("CartPole-v1", ["--norm-obs"]), ("Pendulum-v1", [])]:
            argv = [f"--env-id={env_id}", "--num-envs=1", "--num-steps=16", "--num-minibatches=2",
                    "--total-timesteps=32", "--save-model", f"--exp-name={env_id}", "--no-cuda", *flags]
            assert run_main(argv).rc == 0
    finally:
        os.chdir(previous)
    models = {}
    for run_dir in (directory / "runs").iterdir():
        env_id = run_dir.name.split("__")[0]
        models[env_id] = run_dir / f"{env_id}.cleanrl_model"
        models["checkpoint"] = run_dir / "checkpoint.pt"
    (directory / "text.cleanrl_model").write_text("not a model\n")
    models["text"] = directory / "text.cleanrl_model"
    models["nothing"] = directory / "nothing.cleanrl_model"
    return {name: str(path) for name, path in models.items()}


@st.composite
def evaluations(draw):
    """(model, Draw): --eval-only with a model (MODEL in argv stands for its path) and any other flags."""
    model = draw(some("CartPole-v1", "Pendulum-v1") | some("checkpoint", "text", "nothing"))
    own_env = next((env for env in ENVS if env.env_id == model), None) if draw(st.booleans()) else None
    run = draw(fresh_runs(names=[name for name in FLAGS if name not in ["eval_only", "model_path"]], env=own_env))
    episodes = run.given.get("eval_episodes", draw(st.integers(1, 3)))
    given = dict(run.given, eval_only=True, eval_episodes=episodes)
    argv = [a for a in run.argv if not a.startswith("--eval-episodes=")]
    return model, Draw(["--eval-only", "--model-path=MODEL", f"--eval-episodes={episodes}", *argv], run.env,
                       run.args | given, given)


@pytest.mark.slow
@given(drawn=evaluations())
@settings(settings.get_profile(PROFILE))
def test_eval_only_with_any_flags_evaluates_or_is_refused_in_one_line(example_dirs, saved_models, drawn):
    model, draw = drawn
    env = draw.env
    args = dict(draw.args, model_path=saved_models[model])
    as_training = dict(args, eval_only=False, model_path=None)  # the flags check_args checks for training too
    assume(known_issue(as_training, env) is None)
    note(f"MODEL: {model}")
    argv = [a.replace("MODEL", saved_models[model]) if a.startswith("--model-path=") else a for a in draw.argv]
    with empty_directory(example_dirs) as cwd:
        result = run_main(argv)
        reason = refusal(as_training, env) or ("no episodes" if not args["eval_episodes"] > 0 else
                                               "not a model" if model not in ppo.PRESETS else None)
        if reason:
            event(f"refused: {reason}")
            assert result.rc == 2, f"accepted, though the rules refuse it ({reason})"
            check_refused(result, cwd, {})
            return
        if result.rc == 2:  # a model of another env: refused, unless its shapes fit that env too
            assert model != env.env_id or may_refuse(as_training, env), f"refused: {result.stderr.strip()}"
            check_refused(result, cwd, {})
            return
        assert result.rc == 0 and result.stderr == "", result.stderr
        assert sorted(p.name for p in cwd.iterdir()) == ["runs"] + ["videos"] * args["capture_video"]
        (run_dir,) = (cwd / "runs").iterdir()
        name, when = run_dir.name.rsplit("__", 1)
        assert run_dir.name == run_name_of(dict(args, exp_name=args["exp_name"] + "-eval"), int(when))
        assert all(p.name.startswith("events.out.tfevents.") for p in run_dir.iterdir())
        scalars = read_scalars(run_dir)
        assert set(scalars) == {"eval/episodic_return"}
        returns = [value for _, value in scalars["eval/episodic_return"]]
        assert len(returns) == args["eval_episodes"] and all(math.isfinite(value) for value in returns)


def test_read_scalars_reads_a_run_and_its_resume_in_the_order_written(tmp_path):
    """Two event files of one second and one process, counters 9 and 10 (as a run and its resume in one test
    can be): as text "10" sorts first, and this file's resume checks read the steps backwards."""
    for step, counter in [(512, 9), (1024, 10)]:
        writer = SummaryWriter(tmp_path / str(counter))
        writer.add_scalar("losses/approx_kl", 0.1, step)
        writer.close()
        (written,) = (tmp_path / str(counter)).iterdir()
        written.rename(tmp_path / f"events.out.tfevents.1796650000.my.host.4242.{counter}")
        (tmp_path / str(counter)).rmdir()
    assert [step for step, _ in read_scalars(tmp_path)["losses/approx_kl"]] == [512, 1024]
