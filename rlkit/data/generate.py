"""Generate D4RL-style datasets locally and write them as Minari datasets.

``python -m rlkit.data.generate --env Hopper-v5 --kinds medium medium-replay`` trains
an SB3 SAC agent on the env (evaluating and keeping a snapshot every
``eval_freq`` steps), then writes the requested kinds as in D4RL (Fu et al.,
2020, https://arxiv.org/abs/2004.07219):

- ``random``: ``size`` transitions of a uniformly random policy;
- ``expert``: ``size`` transitions of the best snapshot (stochastic actions);
- ``medium``: ``size`` transitions of the snapshot whose return is closest to
  ``R_random + medium_fraction * (R_expert - R_random)`` (a third of the way, as D4RL);
- ``medium-replay``: every transition SAC collected up to the medium snapshot;
- ``medium-expert``: the medium and expert transitions together (``2 * size``).

and, for an env with a scripted behaviour, without training SAC:

- ``scripted``: ``size`` transitions of the scripted behaviour (:func:`scripted_actor`: a toy
  task's own ``scripted_behaviour(rng)``, e.g. ``toy/two-regions-v0``, or Meta-World's scripted
  policy), an equal share at each level ``sigma`` of ``noise_levels`` (default: none):
  actions ``clip(a + sigma * eps, low, high)`` with ``eps ~ N(0, I)``, so that with several
  levels the episodes range from success (``sigma = 0``) to failure.

Reference scores: D4RL's for hopper, halfcheetah, walker2d and ant; those the
env declares (``ref_min_score`` / ``ref_max_score`` attributes, as the toy tasks)
otherwise; else the measured returns of the random policy and of the expert (for
``scripted``: of the noiseless scripted behaviour).
The datasets go to the Minari store (``$MINARI_DATASETS_PATH``) under
``rlkit/<env>/<kind>-v0`` with the generating command and its settings in the
metadata. Everything is cached: a second call with the same settings reuses the
datasets, and the trained agent (under ``.rlkit-agents/`` in the store) serves
later calls for other kinds.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import json
import pathlib
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import minari
import numpy as np
import torch as th
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.sac.policies import SACPolicy
from tqdm.auto import tqdm

from rlkit.common.evaluation import evaluate
from rlkit.data.minari import D4RL_KINDS, KINDS, SCRIPTED_KIND, local_dataset_id
from rlkit.data.scores import d4rl_ref_scores

#: default noise levels of ``scripted``: the behaviour as it is (Meta-World's mixed-quality data in pearl-local: 0 1 3 10)
DEFAULT_NOISE_LEVELS = (0.0,)
#: settings that do not change the data
_NON_DATA_KEYS = ("overwrite", "progress_bar")
#: defaults of the budgets, by env family: toy tasks in seconds, a usable MuJoCo medium-replay in < 20 min on 2 cores
DEFAULT_BUDGETS: dict[str, dict[str, Any]] = {
    "toy": {
        "size": 5_000,
        "train_steps": 1_500,
        "learning_starts": 100,
        "eval_freq": 100,
        "sac_kwargs": {"learning_rate": 3e-3, "gamma": 0.9, "batch_size": 64, "policy_kwargs": {"net_arch": [64, 64]}},
    },
    "default": {
        "size": 100_000,
        "train_steps": 60_000,
        "learning_starts": 5_000,
        "eval_freq": 5_000,
        "sac_kwargs": {"learning_rate": 1e-3},
    },
}


@dataclasses.dataclass
class GenerateConfig:
    """Settings of a generation run (all of them are stored in each dataset's metadata).

    :param env_id: id for :func:`rlkit.envs.make_env`
    :param kinds: dataset kinds to write, from :data:`~rlkit.data.minari.KINDS`
    :param size: transitions of the random, medium, expert and scripted datasets
    :param train_steps: SAC environment steps
    :param learning_starts: SAC's initial uniformly random steps
    :param eval_freq: evaluate and keep a snapshot every ``eval_freq`` steps
    :param n_eval_episodes: episodes of each snapshot evaluation
    :param n_ref_episodes: episodes of the measured reference returns
    :param medium_fraction: the medium policy's return sits this fraction of the way from random to expert
    :param expert_share: share of expert transitions in ``expert-random`` (the rest are uniformly random)
    :param noise_levels: standard deviations of the Gaussian action noise of ``scripted``, an equal share of
        the ``size`` transitions each
    :param seed: seed of SAC, the evaluations and the rollouts
    :param sac_kwargs: keyword arguments of SB3's ``SAC``
    :param namespace: Minari namespace of the dataset ids
    :param overwrite: replace existing datasets generated with other settings
    :param progress_bar: show tqdm progress bars
    """

    env_id: str
    kinds: list[str] = dataclasses.field(default_factory=lambda: list(D4RL_KINDS))
    size: int | None = None
    train_steps: int | None = None
    learning_starts: int | None = None
    eval_freq: int | None = None
    n_eval_episodes: int = 5
    n_ref_episodes: int = 20
    medium_fraction: float = 1.0 / 3.0
    expert_share: float = 0.2
    noise_levels: list[float] = dataclasses.field(default_factory=lambda: list(DEFAULT_NOISE_LEVELS))
    seed: int = 0
    sac_kwargs: dict[str, Any] | None = None
    namespace: str = "rlkit"
    overwrite: bool = False
    progress_bar: bool = True

    def __post_init__(self) -> None:
        defaults = DEFAULT_BUDGETS["toy" if self.env_id.startswith("toy/") else "default"]
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, copy.deepcopy(value))
        self.kinds = list(dict.fromkeys(self.kinds))
        unknown = [kind for kind in self.kinds if kind not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"Unknown dataset kind(s) {unknown or self.kinds}: choose from {list(KINDS)}")
        for key in ("size", "train_steps", "eval_freq", "n_eval_episodes", "n_ref_episodes"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0 <= self.learning_starts < self.train_steps:
            raise ValueError(f"learning_starts ({self.learning_starts}) must be in [0, train_steps={self.train_steps})")
        if self.eval_freq > self.train_steps:
            raise ValueError(f"eval_freq ({self.eval_freq}) must not exceed train_steps ({self.train_steps})")
        if not 0.0 < self.medium_fraction < 1.0:
            raise ValueError(f"medium_fraction must be in (0, 1), got {self.medium_fraction}")
        if not 0.0 < self.expert_share < 1.0:
            raise ValueError(f"expert_share must be in (0, 1), got {self.expert_share}")
        self._check_noise_levels()

    def _check_noise_levels(self) -> None:
        """Noise levels as floats; for ``scripted``: at least one, each finite and non-negative."""
        self.noise_levels = [float(sigma) for sigma in self.noise_levels]
        if SCRIPTED_KIND not in self.kinds:
            return
        if not self.noise_levels or not all(0.0 <= sigma < np.inf for sigma in self.noise_levels):
            raise ValueError(f"noise_levels must be finite and non-negative, at least one, got {self.noise_levels}")
        assert self.size is not None  # set from the defaults above
        if self.size < len(self.noise_levels):
            raise ValueError(f"size ({self.size}) must give each of the {len(self.noise_levels)} noise levels a transition")

    def command(self) -> str:
        """The command line that reproduces this run."""
        parts = ["python -m rlkit.data.generate", f"--env {self.env_id}", f"--kinds {' '.join(self.kinds)}"]
        for field in ("size", "train_steps", "learning_starts", "eval_freq", "n_eval_episodes", "n_ref_episodes"):
            parts.append(f"--{field.replace('_', '-')} {getattr(self, field)}")
        parts += [f"--medium-fraction {self.medium_fraction:.6g}", f"--seed {self.seed}", f"--namespace {self.namespace}"]
        if "expert-random" in self.kinds:
            parts.append(f"--expert-share {self.expert_share:.6g}")
        if SCRIPTED_KIND in self.kinds:
            parts.append(f"--noise-levels {' '.join(f'{sigma:.6g}' for sigma in self.noise_levels)}")
        parts.append(f"--sac-kwargs '{json.dumps(self.sac_kwargs, sort_keys=True)}'")
        return " ".join(parts)

    def training_settings(self) -> dict[str, Any]:
        """The settings the trained agent depends on."""
        keys = ("env_id", "train_steps", "learning_starts", "eval_freq", "n_eval_episodes", "seed", "sac_kwargs")
        return {key: getattr(self, key) for key in keys}

    def data_settings(self, kind: str) -> dict[str, Any]:
        """The settings a dataset of ``kind`` depends on."""
        settings: dict[str, Any] = {"env_id": self.env_id, "kind": kind, "seed": self.seed}
        if kind != "medium-replay":
            settings["size"] = self.size
        if kind == SCRIPTED_KIND:
            return {**settings, "noise_levels": self.noise_levels, "n_ref_episodes": self.n_ref_episodes}
        if kind != "random":
            settings.update(self.training_settings(), medium_fraction=self.medium_fraction)
        if kind == "expert-random":
            settings["expert_share"] = self.expert_share
        return settings


@dataclasses.dataclass
class TrainedAgent:
    """What generation needs from the SAC run: the policies, the replay and the reference returns."""

    policy: SACPolicy
    snapshots: list[dict[str, Any]]
    replay: dict[str, np.ndarray]
    random_return: float

    def select(self, medium_fraction: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """The expert (best snapshot) and the medium snapshot (closest to the target return, not after the expert)."""
        expert = max(self.snapshots, key=lambda snap: snap["return"])
        target = self.random_return + medium_fraction * (expert["return"] - self.random_return)
        candidates = [snap for snap in self.snapshots if snap["step"] <= expert["step"]]
        medium = min(candidates, key=lambda snap: abs(snap["return"] - target))
        return medium, expert

    def policy_at(self, snapshot: dict[str, Any]) -> SACPolicy:
        """The SAC policy with the weights of ``snapshot``."""
        self.policy.load_state_dict(snapshot["state_dict"])
        return self.policy


class SnapshotCallback(BaseCallback):
    """Every ``eval_freq`` steps: evaluate the deterministic policy and keep a copy of its weights."""

    def __init__(self, eval_env: gym.Env, eval_freq: int, n_eval_episodes: int, seed: int, pbar: tqdm) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.seed = seed
        self.pbar = pbar
        self.snapshots: list[dict[str, Any]] = []

    def _on_step(self) -> bool:
        self.pbar.update(1)
        if self.n_calls % self.eval_freq == 0:
            result = evaluate(self.model, self.eval_env, self.n_eval_episodes, seed=self.seed)
            state_dict = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
            self.snapshots.append({"step": self.num_timesteps, "return": result.return_mean, "state_dict": state_dict})
            self.pbar.set_postfix(eval_return=f"{result.return_mean:.1f}")
        return True


def _agent_dir(config: GenerateConfig, tag: str = "") -> pathlib.Path:
    settings = json.dumps({**config.training_settings(), **({"tag": tag} if tag else {})}, sort_keys=True)
    digest = hashlib.sha1(settings.encode()).hexdigest()[:10]
    suffix = f"-{tag}" if tag else ""
    return get_dataset_path() / ".rlkit-agents" / f"{config.env_id.lower().replace('/', '-')}{suffix}-{digest}"


def measure_return(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], n_episodes: int, seed: int) -> float:
    """Mean return of ``act`` over ``n_episodes`` episodes (episode ``i`` reset with ``seed + i``).

    :param env: the environment
    :param act: observation -> action
    :param n_episodes: number of episodes
    :param seed: seed of the first reset
    """
    returns = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def measure_random_return(env: gym.Env, n_episodes: int, seed: int) -> float:
    """Mean return of uniformly random actions over ``n_episodes`` episodes (episode ``i`` reset with ``seed + i``)."""
    return measure_return(env, _random_actor(env.action_space, seed), n_episodes, seed)


def train_agent(config: GenerateConfig, make_train_env: Callable[[], gym.Env] | None = None, tag: str = "") -> TrainedAgent:
    """Train SAC on ``config.env_id`` (or reuse the cached run with the same training settings).

    :param config: the generation settings (budgets, seed, SAC's keyword arguments)
    :param make_train_env: builds the env SAC trains and is evaluated on (default: ``make_env(config.env_id)``;
        the safe datasets train on a cost-penalised env)
    :param tag: names what ``make_train_env`` changes, in the cache key (runs with other tags are other agents)
    """
    from rlkit.envs import make_env

    def default_env() -> gym.Env:
        return make_env(config.env_id)

    make_train_env = make_train_env or default_env
    folder = _agent_dir(config, tag)
    if (folder / "training.json").is_file():
        summary = json.loads((folder / "training.json").read_text())
        state_dicts = th.load(folder / "snapshots.pt", weights_only=True)
        entries = summary["snapshots"]
        snapshots = [{**entry, "state_dict": sd} for entry, sd in zip(entries, state_dicts, strict=True)]
        with np.load(folder / "replay.npz") as replay:
            policy = SACPolicy.load(str(folder / "policy.zip"), device="cpu")
            return TrainedAgent(policy, snapshots, dict(replay), summary["random_return"])

    random_return = measure_random_return(make_train_env(), config.n_ref_episodes, config.seed)
    sac_kwargs = {"buffer_size": config.train_steps, **copy.deepcopy(config.sac_kwargs or {})}
    model = SAC(
        "MlpPolicy",
        make_train_env(),
        learning_starts=config.learning_starts,
        seed=config.seed,
        device="cpu",
        **sac_kwargs,
    )
    desc = f"SAC on {config.env_id}" + (f" ({tag})" if tag else "")
    with tqdm(total=config.train_steps, desc=desc, disable=not config.progress_bar) as pbar:
        callback = SnapshotCallback(make_train_env(), config.eval_freq, config.n_eval_episodes, config.seed + 10_000, pbar)
        model.learn(config.train_steps, callback=callback)
    buffer = model.replay_buffer
    n = buffer.buffer_size if buffer.full else buffer.pos
    timeouts = buffer.timeouts[:n, 0].astype(np.float32)
    replay = {
        "observations": buffer.observations[:n, 0],
        "next_observations": buffer.next_observations[:n, 0],
        "actions": model.policy.unscale_action(buffer.actions[:n, 0]),
        "rewards": buffer.rewards[:n, 0],
        "terminals": buffer.dones[:n, 0] * (1.0 - timeouts),
        "timeouts": timeouts,
    }
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "replay.npz", **replay)
    model.policy.save(str(folder / "policy.zip"))
    th.save([snap["state_dict"] for snap in callback.snapshots], folder / "snapshots.pt")
    entries = [{"step": snap["step"], "return": snap["return"]} for snap in callback.snapshots]
    summary = {"settings": {**config.training_settings(), "tag": tag}, "random_return": random_return, "snapshots": entries}
    (folder / "training.json").write_text(json.dumps(summary, indent=1))
    return TrainedAgent(model.policy, callback.snapshots, replay, random_return)


def _episode_buffers_from_replay(replay: dict[str, np.ndarray], end: int) -> list[EpisodeBuffer]:
    """Split the first ``end`` SAC transitions into Minari episodes (the last one truncated if cut)."""
    done = (replay["terminals"][:end] + replay["timeouts"][:end]) > 0
    done[-1] = True
    episodes, start = [], 0
    for stop in np.flatnonzero(done) + 1:
        window = slice(start, stop)
        truncations = replay["timeouts"][window] > 0
        truncations[-1] |= replay["terminals"][stop - 1] == 0
        observations = np.concatenate([replay["observations"][window], replay["next_observations"][stop - 1 : stop]])
        episodes.append(
            EpisodeBuffer(
                id=len(episodes),
                observations=observations,
                actions=replay["actions"][window],
                rewards=replay["rewards"][window],
                terminations=replay["terminals"][window] > 0,
                truncations=truncations,
            )
        )
        start = stop
    return episodes


def collect(
    env: gym.Env, act: Callable[[np.ndarray], np.ndarray], size: int, seed: int, desc: str = "", progress_bar: bool = True
) -> list[EpisodeBuffer]:
    """Roll out ``act`` for ``size`` transitions (the last episode is cut, as a truncation).

    Episode ``i`` is reset with ``seed + i``; ``info["cost"]`` is kept where the env reports it.

    :param env: the environment
    :param act: observation -> action
    :param size: number of transitions
    :param seed: seed of the first reset
    :param desc: progress bar label
    :param progress_bar: show a tqdm progress bar
    """
    episodes: list[EpisodeBuffer] = []
    total = 0
    with tqdm(total=size, desc=desc, disable=not progress_bar) as pbar:
        while total < size:
            obs, info = env.reset(seed=seed + len(episodes))
            observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
            costs = [float(info.get("cost", 0.0))]
            has_cost = False
            done = False
            while not done:
                action = act(obs)
                obs, reward, terminated, truncated, info = env.step(action)
                total += 1
                truncated = truncated or (total >= size and not terminated)
                observations.append(obs)
                actions.append(action)
                rewards.append(float(reward))
                terminations.append(terminated)
                truncations.append(truncated)
                has_cost = has_cost or "cost" in info
                costs.append(float(info.get("cost", 0.0)))
                done = terminated or truncated
            pbar.update(len(actions))
            episodes.append(
                EpisodeBuffer(
                    id=len(episodes),
                    seed=seed + len(episodes),
                    observations=np.asarray(observations, dtype=np.float32),
                    actions=np.asarray(actions, dtype=np.float32),
                    rewards=np.asarray(rewards, dtype=np.float64),
                    terminations=np.asarray(terminations),
                    truncations=np.asarray(truncations),
                    infos={"cost": np.asarray(costs)} if has_cost else None,
                )
            )
    return episodes


def _declared_reference_scores(env: gym.Env, env_id: str) -> tuple[float, float, str] | None:
    refs = d4rl_ref_scores(env_id)
    if refs is not None:
        return refs[0], refs[1], "D4RL reference returns"
    declared = (getattr(env.unwrapped, "ref_min_score", None), getattr(env.unwrapped, "ref_max_score", None))
    if declared[0] is not None and declared[1] is not None:
        return float(declared[0]), float(declared[1]), "reference returns declared by the env"
    return None


def _measured_reference_scores(env: gym.Env, config: GenerateConfig, agent: TrainedAgent) -> tuple[float, float, str]:
    _, expert = agent.select(config.medium_fraction)
    result = evaluate(agent.policy_at(expert), env, config.n_ref_episodes, seed=config.seed + 20_000)
    return agent.random_return, result.return_mean, f"measured over {config.n_ref_episodes} episodes (random policy, expert)"


def _scripted_reference_scores(env: gym.Env, config: GenerateConfig) -> tuple[float, float, str]:
    random_return = measure_random_return(env, config.n_ref_episodes, config.seed)
    expert = scripted_actor(env, config.env_id, config.seed + 20_000)
    expert_return = measure_return(env, expert, config.n_ref_episodes, config.seed + 20_000)
    source = f"measured over {config.n_ref_episodes} episodes (random policy, noiseless scripted behaviour)"
    return random_return, expert_return, source


def _reference_scores(
    env: gym.Env, config: GenerateConfig, declared: tuple[float, float, str] | None, agent: TrainedAgent | None
) -> Callable[[str], tuple[float, float, str]]:
    """kind -> its reference scores: ``declared`` where given; else measured once each, against the noiseless
    scripted behaviour for ``scripted`` and against SAC's expert (of ``agent``) for the other kinds."""
    measured: dict[bool, tuple[float, float, str]] = {}

    def scores(kind: str) -> tuple[float, float, str]:
        if declared is not None:
            return declared
        scripted = kind == SCRIPTED_KIND
        if scripted not in measured:
            if scripted:
                measured[scripted] = _scripted_reference_scores(env, config)
            else:
                assert agent is not None
                measured[scripted] = _measured_reference_scores(env, config, agent)
        return measured[scripted]

    return scores


def _random_actor(action_space: gym.Space, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    action_space.seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        return action_space.sample()

    return act


def noisy_actor(
    act: Callable[[np.ndarray], np.ndarray], sigma: float, action_space: gym.spaces.Box, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``act`` with Gaussian action noise: ``clip(act(obs) + sigma * eps, low, high)``, ``eps ~ N(0, I)``.

    :param act: observation -> action
    :param sigma: standard deviation of the noise (0: ``act`` clipped to the bounds)
    :param action_space: the bounds
    :param seed: seed of the noise
    """
    rng = np.random.default_rng(seed)

    def noisy(obs: np.ndarray) -> np.ndarray:
        action = act(obs) + sigma * rng.standard_normal(action_space.shape)
        return np.clip(action, action_space.low, action_space.high).astype(action_space.dtype)

    return noisy


def scripted_actor(env: gym.Env, env_id: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted behaviour of an env: its own ``scripted_behaviour(rng)`` (toy tasks that declare one, e.g.
    ``toy/two-regions-v0``; its noise drawn from a generator seeded with ``seed``), else the scripted policy of
    ``env_id`` (:func:`rlkit.envs.registry.scripted_policy`: Meta-World's tasks).

    :param env: the env the behaviour acts in
    :param env_id: its id
    :param seed: seed of the behaviour's own generator
    :raises ValueError: when the env has neither
    """
    from rlkit.envs.registry import scripted_policy

    behaviour = getattr(env.unwrapped, "scripted_behaviour", None)
    if behaviour is not None:
        rng = np.random.default_rng(seed)

        def act(obs: np.ndarray) -> np.ndarray:
            return behaviour(rng)

        return act
    try:
        return scripted_policy(env_id)
    except ValueError as exc:
        sac_kinds = ", ".join(kind for kind in KINDS if kind != SCRIPTED_KIND)
        raise ValueError(
            f"The {SCRIPTED_KIND} kind records an env's scripted behaviour: {env_id!r} declares no "
            f"scripted_behaviour(rng) (as toy/two-regions-v0 does) and {exc}. Choose such a task, or a kind recorded "
            f"from SAC for {env_id} ({sac_kinds})"
        ) from exc


def _scripted_episodes(env: gym.Env, config: GenerateConfig) -> list[EpisodeBuffer]:
    """``size`` transitions of the scripted behaviour, an equal share (whole episodes, the last one cut) per noise level."""
    assert config.size is not None and isinstance(env.action_space, gym.spaces.Box)
    shares = [len(share) for share in np.array_split(np.arange(config.size), len(config.noise_levels))]
    episodes: list[EpisodeBuffer] = []
    for level, (sigma, share) in enumerate(zip(config.noise_levels, shares, strict=True)):
        expert = scripted_actor(env, config.env_id, config.seed + 80_000 + 1_000 * level)
        act = noisy_actor(expert, sigma, env.action_space, config.seed + level)
        desc = f"scripted rollouts (sigma={sigma:g})"
        episodes += collect(env, act, share, config.seed + 80_000 + 1_000 * level, desc, config.progress_bar)
    return episodes


def sac_actor(policy: SACPolicy) -> Callable[[np.ndarray], np.ndarray]:
    """The stochastic SAC policy, as D4RL's datasets were recorded."""

    def act(obs: np.ndarray) -> np.ndarray:
        return policy.predict(obs, deterministic=False)[0]

    return act


def existing_dataset(dataset_id: str, settings: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``dataset_id`` exists with ``settings``; removes it (``overwrite``) or raises when the settings differ.

    A dataset without rlkit's settings in its metadata (written last) is the remains of
    an interrupted write: it is removed and generated again.
    """
    path = get_dataset_path(dataset_id)
    if not (path / "data").is_dir():
        return False
    try:
        metadata = minari.dataset.minari_storage.MinariStorage.read_raw_metadata(path / "data")
    except (OSError, ValueError):
        metadata = {}
    stored = metadata.get("rlkit_generate")
    if stored is None:
        shutil.rmtree(path)
        return False
    if stored == json.loads(json.dumps(settings)):
        return True
    if not overwrite:
        differ = sorted(k for k in set(settings) | set(stored or {}) if (stored or {}).get(k) != settings.get(k))
        raise ValueError(
            f"{dataset_id} exists with other settings ({', '.join(differ) or 'not generated by rlkit'}; stored: {stored}). "
            "Pass --overwrite (overwrite=True) to replace it, or --namespace to write elsewhere"
        )
    shutil.rmtree(path)
    return False


def _recorded_env(env: gym.Env, env_id: str) -> gym.Env | gym.envs.registration.EnvSpec:
    """The env Minari records with a dataset: ``env``, or rlkit's registered spec of ``env_id`` where the spec of
    ``env`` cannot be stored as JSON (Meta-World's entry point is a function)."""
    try:
        if env.spec is not None:
            env.spec.to_json()
        return env
    except ValueError:
        return gym.spec(env_id)


def _write(
    dataset_id: str,
    episodes: list[EpisodeBuffer],
    env: gym.Env,
    config: GenerateConfig,
    kind: str,
    refs: tuple[float, float, str],
    algorithm: str,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari warns about every optional field it is not given
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffer=[dataclasses.replace(episode, id=i) for i, episode in enumerate(episodes)],
            env=_recorded_env(env, config.env_id),
            algorithm_name=algorithm,
            author="rlkit",
            author_email="rlkit@users.noreply.github.com",
            code_permalink="rlkit/data/generate.py",
            description=f"D4RL-style {kind} dataset of {config.env_id} generated by rlkit ({algorithm}).",
        )
    dataset.storage.update_metadata(
        {
            "ref_min_score": refs[0],
            "ref_max_score": refs[1],
            "ref_scores_source": refs[2],
            "rlkit_env_id": config.env_id,
            "rlkit_generate": config.data_settings(kind),
            "generate_command": config.command(),
        }
    )


def generate(env_id: str, kinds: Sequence[str] = D4RL_KINDS, size: int | None = None, **kwargs: Any) -> dict[str, str]:
    """Generate (or reuse) D4RL-style Minari datasets of ``env_id``.

    :param env_id: id for :func:`rlkit.envs.make_env`, e.g. ``Hopper-v5`` or ``toy/reach-v0``
    :param kinds: kinds to write, from ``random, medium, expert, medium-replay, medium-expert`` (D4RL's, the
        default), ``expert-random`` (``expert_share`` of the ``size`` transitions from the expert policy, the
        rest from a uniformly random one, whole episodes each) and ``scripted`` (the env's scripted behaviour at
        each of ``noise_levels``: toy tasks that declare one and Meta-World's tasks)
    :param size: transitions of the random, medium, expert and scripted datasets (default by env family)
    :param kwargs: the other fields of :class:`GenerateConfig` (budgets, seed, namespace, ...); with
        ``cost_penalties`` a safe dataset of :func:`rlkit.data.safe.generate_safe` instead
    :return: kind -> Minari dataset id, for :func:`rlkit.data.load_dataset`
    """
    if "cost_penalties" in kwargs:  # a DSRL-like safe dataset: behaviour policies at several cost levels
        from rlkit.data.safe import generate_safe

        return generate_safe(env_id, kinds, size, **kwargs)
    config = GenerateConfig(env_id=env_id, kinds=list(kinds), size=size, **kwargs)
    ids = {kind: local_dataset_id(env_id, kind, config.namespace) for kind in config.kinds}
    with store_lock(f"{config.namespace}-{env_id}"):
        todo = [kind for kind in config.kinds if not existing_dataset(ids[kind], config.data_settings(kind), config.overwrite)]
        if todo:
            _generate(config, env_id, ids, todo)
    return ids


@contextlib.contextmanager
def store_lock(name: str) -> Iterator[None]:
    """An exclusive lock on ``name`` in the Minari store, across processes (and NFS clients).

    Two processes asking for the same env's datasets wait for each other instead of
    writing the same files: the second finds the first one's datasets and reuses them.
    """
    locks = pathlib.Path(get_dataset_path()) / ".rlkit-locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name.replace('/', '-')}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _generate(config: GenerateConfig, env_id: str, ids: dict[str, str], todo: list[str]) -> None:
    """Write the datasets of ``todo`` (the caller holds the store lock)."""
    from rlkit.envs import make_env

    env = make_env(env_id)
    if SCRIPTED_KIND in todo:
        scripted_actor(env, env_id, config.seed)  # no scripted behaviour: fail before any SAC run
    declared = _declared_reference_scores(env, env_id)
    needs_sac = any(kind != SCRIPTED_KIND and (kind != "random" or declared is None) for kind in todo)
    agent = train_agent(config) if needs_sac else None
    reference_scores = _reference_scores(env, config, declared, agent)
    rollouts: dict[str, list[EpisodeBuffer]] = {}

    def rollout(name: str) -> list[EpisodeBuffer]:
        if name not in rollouts:
            if name == "random":
                act = _random_actor(env.action_space, config.seed)
            else:
                assert agent is not None
                medium, expert = agent.select(config.medium_fraction)
                act = sac_actor(agent.policy_at(medium if name == "medium" else expert))
            seed = config.seed + {"random": 30_000, "medium": 40_000, "expert": 50_000}[name]
            rollouts[name] = collect(env, act, config.size, seed, f"{name} rollouts", config.progress_bar)
        return rollouts[name]

    for kind in todo:
        if kind == "medium-replay":
            assert agent is not None
            medium, _ = agent.select(config.medium_fraction)
            episodes = _episode_buffers_from_replay(agent.replay, medium["step"])
        elif kind == "medium-expert":
            episodes = rollout("medium") + rollout("expert")
        elif kind == "expert-random":
            assert agent is not None
            _, expert = agent.select(config.medium_fraction)
            assert config.size is not None  # set from the defaults in __post_init__
            n_expert = max(round(config.expert_share * config.size), 1)
            episodes = collect(
                env, sac_actor(agent.policy_at(expert)), n_expert, config.seed + 60_000, "expert rollouts", config.progress_bar
            ) + collect(
                env,
                _random_actor(env.action_space, config.seed + 1),
                config.size - n_expert,
                config.seed + 70_000,
                "random rollouts",
                config.progress_bar,
            )
        elif kind == SCRIPTED_KIND:
            episodes = _scripted_episodes(env, config)
        else:
            episodes = rollout(kind)
        algorithm = {
            "random": "uniformly random policy",
            "expert-random": "stable-baselines3 SAC and a uniformly random policy",
            SCRIPTED_KIND: f"scripted behaviour with Gaussian action noise (sigma in {config.noise_levels})",
        }.get(kind, "stable-baselines3 SAC")
        _write(ids[kind], episodes, env, config, kind, reference_scores(kind), algorithm)


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m rlkit.data.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, help="environment id for rlkit.envs.make_env, e.g. Hopper-v5, toy/reach-v0")
    kinds_help = f"dataset kinds to write: {', '.join(KINDS)}"
    parser.add_argument("--kinds", nargs="+", default=list(D4RL_KINDS), choices=KINDS, metavar="KIND", help=kinds_help)
    parser.add_argument("--size", type=int, help="transitions of random/medium/expert/scripted (default: 100000; toy: 5000)")
    parser.add_argument("--train-steps", type=int, help="SAC environment steps (default: 60000; toy: 1500)")
    parser.add_argument("--learning-starts", type=int, help="SAC's initial random steps (default: 5000; toy: 100)")
    parser.add_argument("--eval-freq", type=int, help="evaluate and snapshot SAC every N steps (default: 5000; toy: 100)")
    parser.add_argument("--n-eval-episodes", type=int, default=5, help="episodes per snapshot evaluation")
    parser.add_argument("--n-ref-episodes", type=int, default=20, help="episodes of measured reference returns")
    parser.add_argument("--medium-fraction", type=float, default=1.0 / 3.0, help="medium return: 0 random, 1 expert")
    parser.add_argument("--expert-share", type=float, default=0.2, help="expert share of expert-random's transitions")
    noise_help = f"noise standard deviations of {SCRIPTED_KIND}, an equal share each (default: {list(DEFAULT_NOISE_LEVELS)})"
    parser.add_argument("--noise-levels", nargs="+", type=float, default=list(DEFAULT_NOISE_LEVELS), help=noise_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--namespace", default="rlkit", help="Minari namespace of the dataset ids")
    sac_help = 'keyword arguments of SB3 SAC as JSON, replacing the defaults (MuJoCo: {"learning_rate": 0.001})'
    parser.add_argument("--sac-kwargs", type=json.loads, help=sac_help)
    parser.add_argument("--overwrite", action="store_true", help="replace datasets generated with other settings")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    ids = generate(
        args.env,
        args.kinds,
        size=args.size,
        train_steps=args.train_steps,
        learning_starts=args.learning_starts,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.n_eval_episodes,
        n_ref_episodes=args.n_ref_episodes,
        medium_fraction=args.medium_fraction,
        expert_share=args.expert_share,
        noise_levels=args.noise_levels,
        seed=args.seed,
        sac_kwargs=args.sac_kwargs,
        namespace=args.namespace,
        overwrite=args.overwrite,
        progress_bar=not args.no_progress,
    )
    for kind, dataset_id in ids.items():
        print(f"{kind}: {dataset_id}")
    return ids


if __name__ == "__main__":
    th.set_num_threads(1)
    main()
