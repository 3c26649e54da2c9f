"""SnapshotRL / S3RL: start a student's episodes in states of a teacher's trajectories.

Zhao et al., "Snapshot Reinforcement Learning: Leveraging Prior Trajectories for
Efficiency" (arXiv 2403.00673). The learning algorithm is left untouched; only the
initial-state distribution of the training env changes during an early phase:

1. :func:`collect_snapshots` rolls a teacher out and records a *snapshot* every
   ``every`` steps: the full simulator state, the observation and info the env
   emitted there, the step index and the teacher's value of that state
   (``Q(s, pi(s))`` of its first critic for off-policy teachers, ``V(s)`` for
   on-policy ones, or the discounted return-to-go for a scripted controller).
2. Status classification (SC): :func:`kmeans_1d` clusters the snapshots by value.
3. :class:`SnapshotReset` resets the env, for the first ``snapshot_steps`` student
   steps, to a snapshot (a cluster uniformly, then a snapshot uniformly inside it),
   returns the stored observation and info, and truncates (never terminates) a
   snapshot-started episode after ``truncate_step`` steps (student trajectory
   truncation, STT). Afterwards it is the plain env.

The four variants of the paper are :data:`VARIANTS`. States are restored without
copying env objects: MuJoCo envs through ``mj_getState``/``mj_setState`` on the
full integration state (time, qpos, qvel, act, controls, warm start, applied
forces, mocap), which makes a replay bit-exact; classic-control envs through their
``state`` attribute; any other env that defines ``get_state()`` and
``set_state(state)`` on its unwrapped object. Wrappers between the env and
:class:`SnapshotReset` must not hold state other than the episode's step counter
(e.g. ``TimeLimit``, which restarts at each reset).
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file

#: The paper's variants: ``n_clusters=None`` samples snapshots uniformly (no SC);
#: ``truncate_step`` 1000 is the MuJoCo episode length (no STT).
VARIANTS: dict[str, dict[str, int | None]] = {
    "S3RL": {"n_clusters": 6, "truncate_step": 100},
    "SnapshotRL+SC": {"n_clusters": 6, "truncate_step": 1000},
    "SnapshotRL+STT": {"n_clusters": None, "truncate_step": 100},
    "SnapshotRL": {"n_clusters": None, "truncate_step": 1000},
}

Teacher = BaseAlgorithm | Callable[[np.ndarray], np.ndarray]


class StateAdapter(Protocol):
    """Reads and writes the full simulator state of an unwrapped env as a flat float64 array."""

    name: str

    def get(self, env: gym.Env) -> np.ndarray: ...

    def set(self, env: gym.Env, state: np.ndarray) -> None: ...


class MujocoState:
    """MuJoCo's integration state (``mjSTATE_INTEGRATION``), restored with ``mj_setState`` and ``mj_forward``."""

    name = "mujoco-integration"

    def get(self, env: gym.Env) -> np.ndarray:
        import mujoco

        model, data = env.unwrapped.model, env.unwrapped.data
        state = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(model, data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        return state

    def set(self, env: gym.Env, state: np.ndarray) -> None:
        import mujoco

        model, data = env.unwrapped.model, env.unwrapped.data
        size = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION)
        if state.shape != (size,):
            raise ValueError(f"A MuJoCo snapshot of {type(env.unwrapped).__name__} has {size} values, got shape {state.shape}")
        # positional arguments: the keyword of the last argument differs between mujoco releases
        mujoco.mj_setState(model, data, np.ascontiguousarray(state, dtype=np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(model, data)


class AttributeState:
    """The ``state`` attribute of gymnasium's classic-control envs (Pendulum, MountainCarContinuous, ...)."""

    name = "state-attribute"

    def get(self, env: gym.Env) -> np.ndarray:
        return np.array(env.unwrapped.state, dtype=np.float64)

    def set(self, env: gym.Env, state: np.ndarray) -> None:
        env.unwrapped.state = np.array(state, dtype=np.float64)


class MethodState:
    """``get_state()`` / ``set_state(state)`` defined by the env itself (e.g. :class:`rlkit.envs.toy.PointReachEnv`)."""

    name = "state-methods"

    def get(self, env: gym.Env) -> np.ndarray:
        return np.array(env.unwrapped.get_state(), dtype=np.float64)

    def set(self, env: gym.Env, state: np.ndarray) -> None:
        env.unwrapped.set_state(np.array(state, dtype=np.float64))


def state_adapter(env: gym.Env) -> StateAdapter:
    """The way to save and restore the state of ``env``; a ``ValueError`` names what is missing.

    :param env: a (possibly wrapped) gymnasium env
    """
    from gymnasium.envs.mujoco import MujocoEnv

    unwrapped = env.unwrapped
    if isinstance(unwrapped, MujocoEnv):
        return MujocoState()
    if callable(getattr(unwrapped, "get_state", None)) and callable(getattr(unwrapped, "set_state", None)):
        return MethodState()
    if hasattr(unwrapped, "state") or type(unwrapped).__module__.startswith("gymnasium.envs.classic_control"):
        return AttributeState()
    raise ValueError(
        f"SnapshotRL cannot save and restore the state of {type(unwrapped).__name__}: it needs a gymnasium MuJoCo env "
        "(gymnasium.envs.mujoco.MujocoEnv), a classic-control env with a `state` attribute, or `get_state()` and "
        "`set_state(state)` methods on the unwrapped env that capture everything its future depends on"
    )


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


@dataclass
class SnapshotSet:
    """Snapshots of teacher trajectories, one row per snapshot.

    :param states: simulator states, ``(n, state_dim)``, as written by the env's :class:`StateAdapter`
    :param observations: the observations the env emitted at those states, ``(n, *obs_shape)``
    :param infos: the infos the env emitted at those states
    :param steps: step index inside the teacher's episode (0 = the reset state)
    :param values: the teacher's value of each state (the feature of status classification)
    :param episodes: index of the teacher episode each snapshot comes from
    :param returns_so_far: the teacher's undiscounted return up to the snapshot (for logging)
    :param state_kind: the name of the :class:`StateAdapter` that wrote ``states``
    :param meta: collection settings and teacher returns
    """

    states: np.ndarray
    observations: np.ndarray
    infos: list[dict[str, Any]]
    steps: np.ndarray
    values: np.ndarray
    episodes: np.ndarray
    returns_so_far: np.ndarray
    state_kind: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def save(self, path: str | Path) -> Path:
        """Write the snapshots to ``path`` (a ``.npz`` file, no pickled objects)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                states=self.states,
                observations=self.observations,
                steps=self.steps,
                values=self.values,
                episodes=self.episodes,
                returns_so_far=self.returns_so_far,
                infos=np.array(json.dumps(_to_json(self.infos))),
                header=np.array(json.dumps({"state_kind": self.state_kind, "meta": _to_json(self.meta)})),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> SnapshotSet:
        """Read snapshots written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            return cls(
                states=data["states"],
                observations=data["observations"],
                infos=_from_json(json.loads(str(data["infos"]))),
                steps=data["steps"],
                values=data["values"],
                episodes=data["episodes"],
                returns_so_far=data["returns_so_far"],
                state_kind=header["state_kind"],
                meta=_from_json(header["meta"]),
            )


def kmeans_1d(values: np.ndarray, n_clusters: int, max_iter: int = 300) -> np.ndarray:
    """Status classification: Lloyd's k-means on a scalar feature; empty clusters are dropped.

    Centres start at the ``(j + 0.5) / k`` quantiles of the distinct values
    (deterministic; the paper calls scikit-learn's KMeans with ``random_state=0``,
    which is not a dependency here). Labels ``0..k'-1`` rank the clusters by mean value.

    :param values: the teacher's values, shape ``(n,)``
    :param n_clusters: the number of clusters ``k`` (fewer if there are fewer distinct values)
    :param max_iter: iteration cap
    :return: the cluster label of each value, consecutive from 0
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    k = min(n_clusters, len(np.unique(x)))
    centers = np.quantile(np.unique(x), (np.arange(k) + 0.5) / k)
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(max_iter):
        labels = np.abs(x[:, None] - centers[None, :]).argmin(axis=1)
        new = np.array([x[labels == j].mean() if np.any(labels == j) else centers[j] for j in range(k)])
        if np.array_equal(new, centers):
            break
        centers = new
    used = np.unique(labels)
    rank = np.argsort(np.argsort([x[labels == j].mean() for j in used]))
    return rank[np.searchsorted(used, labels)]


def load_teacher(path: str | Path, algo_cls: type[BaseAlgorithm] | None = None, device: str = "cpu") -> BaseAlgorithm:
    """Load a teacher saved with ``model.save``.

    :param path: the ``.zip`` file
    :param algo_cls: its algorithm class; by default it is found from the saved policy
        class (the algorithm of the package ``X`` whose policy lives in ``X.policies``)
    :param device: torch device
    """
    if algo_cls is None:
        data, _, _ = load_from_zip_file(path, device=device, load_data=True)
        policy_cls = data["policy_class"]
        package = importlib.import_module(policy_cls.__module__.rpartition(".")[0])
        candidates = [
            obj
            for obj in vars(package).values()
            if isinstance(obj, type) and issubclass(obj, BaseAlgorithm) and policy_cls in obj.policy_aliases.values()
        ]
        if len(candidates) != 1:
            raise ValueError(f"Cannot tell the algorithm of {path} from its policy {policy_cls.__name__}: pass algo_cls")
        algo_cls = candidates[0]
    return algo_cls.load(path, device=device)


def teacher_value(model: BaseAlgorithm, obs: np.ndarray) -> float:
    """The teacher's value of one observation.

    Off-policy actor-critics (SAC, TD3 and their subclasses): ``Q_1(s, pi(s))``
    with the first critic and the deterministic action, as the paper's code uses
    the first Q-head. On-policy actor-critics (PPO, ...): ``V(s)``.

    :param model: an SB3 model whose policy has ``actor`` and ``critic``, or ``predict_values``
    :param obs: one observation as the env emits it
    """
    policy = model.policy
    obs_tensor = policy.obs_to_tensor(obs)[0]
    with th.no_grad():
        if hasattr(policy, "actor") and hasattr(policy, "critic"):
            action = policy._predict(obs_tensor, deterministic=True)
            return float(policy.critic.q1_forward(obs_tensor, action).item())
        if hasattr(policy, "predict_values"):
            return float(policy.predict_values(obs_tensor).item())
    raise ValueError(
        f"The policy {type(policy).__name__} has neither actor+critic (Q) nor predict_values (V): "
        "collect with value='return_to_go'"
    )


def collect_snapshots(  # noqa: C901 (one rollout loop: teacher, value estimate and snapshot rules read best together)
    teacher: Teacher | str | Path,
    env: gym.Env | str,
    n_episodes: int = 10,
    every: int = 10,
    keep_best: int | None = None,
    deterministic: bool = False,
    value: str = "auto",
    gamma: float = 0.99,
    seed: int = 0,
    obs_normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
) -> SnapshotSet:
    """Roll a teacher out and record a snapshot every ``every`` steps (the paper's collection step).

    A snapshot is taken at step 0 (the reset state) and every ``every`` steps after,
    except at the terminal state of an episode.

    :param teacher: an SB3 model, the path of a saved one (see :func:`load_teacher`), or a
        scripted controller ``obs -> action``
    :param env: the env or its id for :func:`rlkit.envs.make_env`; the student's env must
        emit the same observations (the same wrappers)
    :param n_episodes: teacher episodes (the paper: 10)
    :param every: snapshot frequency ``f`` in steps (the paper: 10)
    :param keep_best: keep the snapshots of the best this many episodes by return (default all, as the paper)
    :param deterministic: act deterministically; the paper samples from SAC and PPO teachers
        (TD3's action is deterministic either way)
    :param value: ``"model"`` (Q or V of the teacher, see :func:`teacher_value`),
        ``"return_to_go"`` (discounted return from the snapshot on), or ``"auto"``: ``"model"``
        for SB3 models, ``"return_to_go"`` for scripted controllers
    :param gamma: discount of ``"return_to_go"``
    :param seed: seed of the first episode (episode ``i`` uses ``seed + i``)
    :param obs_normalizer: the teacher's own frozen observation normalisation (e.g.
        ``VecNormalize.normalize_obs`` with ``training=False``), applied to what the teacher
        sees; snapshots keep the raw observations
    """
    from rlkit.envs.registry import make_env

    env_id = env if isinstance(env, str) else None
    if isinstance(env, str):
        env = make_env(env)
    if isinstance(teacher, (str, Path)):
        teacher = load_teacher(teacher)
    is_model = isinstance(teacher, BaseAlgorithm)
    if value == "auto":
        value = "model" if is_model else "return_to_go"
    if value not in ("model", "return_to_go"):
        raise ValueError(f"value must be 'auto', 'model' or 'return_to_go', got {value!r}")
    if value == "model" and not is_model:
        raise ValueError("value='model' needs an SB3 teacher; a scripted controller has no value: use 'return_to_go'")
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise ValueError(f"SnapshotRL needs a Box observation space, got {env.observation_space}")
    if every < 1 or n_episodes < 1:
        raise ValueError(f"every and n_episodes must be positive, got {every} and {n_episodes}")
    adapter = state_adapter(env)
    if is_model:
        teacher.policy.set_training_mode(False)
    env.action_space.seed(seed)

    def seen(obs: np.ndarray) -> np.ndarray:
        return obs_normalizer(obs) if obs_normalizer is not None else obs

    def act(obs: np.ndarray) -> np.ndarray:
        if is_model:
            return teacher.predict(seen(obs), deterministic=deterministic)[0]
        return np.asarray(teacher(seen(obs)))

    episodes: list[dict[str, list[Any]]] = []
    for episode in range(n_episodes):
        obs, info = env.reset(seed=seed + episode)
        rows: dict[str, list[Any]] = {key: [] for key in ("state", "obs", "info", "step", "value", "return", "t")}
        rewards: list[float] = []
        step, done = 0, False
        while not done:
            if step % every == 0:
                rows["state"].append(adapter.get(env))
                rows["obs"].append(np.array(obs, copy=True))
                rows["info"].append(copy.deepcopy(info))
                rows["step"].append(step)
                rows["value"].append(teacher_value(teacher, seen(obs)) if value == "model" else np.nan)
                rows["return"].append(float(np.sum(rewards)))
            obs, reward, terminated, truncated, info = env.step(act(obs))
            rewards.append(float(reward))
            step += 1
            done = terminated or truncated
        if value == "return_to_go":
            to_go = np.zeros(len(rewards) + 1)
            for t in reversed(range(len(rewards))):
                to_go[t] = rewards[t] + gamma * to_go[t + 1]
            rows["value"] = [to_go[t] for t in rows["step"]]
        rows["total"] = [float(np.sum(rewards))]
        episodes.append(rows)
    order = sorted(range(n_episodes), key=lambda i: -episodes[i]["total"][0])
    kept = sorted(order[: keep_best or n_episodes])
    pick = [(i, episodes[i]) for i in kept]
    return SnapshotSet(
        states=np.array([s for _, rows in pick for s in rows["state"]]),
        observations=np.array([o for _, rows in pick for o in rows["obs"]]),
        infos=[info for _, rows in pick for info in rows["info"]],
        steps=np.array([s for _, rows in pick for s in rows["step"]], dtype=np.int64),
        values=np.array([v for _, rows in pick for v in rows["value"]], dtype=np.float64),
        episodes=np.array([i for i, rows in pick for _ in rows["step"]], dtype=np.int64),
        returns_so_far=np.array([r for _, rows in pick for r in rows["return"]], dtype=np.float64),
        state_kind=adapter.name,
        meta={
            "env_id": env_id,
            "n_episodes": n_episodes,
            "every": every,
            "keep_best": keep_best,
            "value": value,
            "teacher_returns": [rows["total"][0] for rows in episodes],
        },
    )


class SnapshotReset(gym.Wrapper):
    """Reset to teacher snapshots for the first ``snapshot_steps`` steps of the wrapped env, then reset normally.

    During the snapshot phase each reset first resets the env (so that the wrappers
    below restart), then restores a snapshot chosen by status classification (a
    non-empty cluster uniformly, then a snapshot uniformly inside it) or uniformly
    over all snapshots (``n_clusters=None``), and returns the stored observation and
    info with ``info["snapshot_index"]`` and ``info["snapshot_cluster"]`` added.
    A snapshot-started episode is truncated after ``truncate_step`` steps, and when
    the phase ends, so that the next reset is the env's own; termination passes
    through unchanged. Steps are counted per wrapped env: in a VecEnv of ``n`` copies
    the phase lasts ``n * snapshot_steps`` steps in total.

    :param env: the student's training env (the same observations as the env the snapshots come from)
    :param snapshots: a :class:`SnapshotSet` or the path of a saved one
    :param snapshot_steps: length of the snapshot phase in steps of this env (the paper: 100k of 1M)
    :param truncate_step: steps before a snapshot-started episode is truncated (STT; the paper: 100),
        ``None`` for no truncation beyond the env's own
    :param n_clusters: clusters of status classification (SC; the paper: 6), ``None`` for uniform sampling
    :param steps_done: steps this env already took (resuming a run)
    """

    def __init__(
        self,
        env: gym.Env,
        snapshots: SnapshotSet | str | Path,
        snapshot_steps: int = 100_000,
        truncate_step: int | None = 100,
        n_clusters: int | None = 6,
        steps_done: int = 0,
    ) -> None:
        super().__init__(env)
        self.snapshots = snapshots if isinstance(snapshots, SnapshotSet) else SnapshotSet.load(snapshots)
        if len(self.snapshots) == 0:
            raise ValueError("SnapshotReset needs at least one snapshot")
        if truncate_step is not None and truncate_step < 1:
            raise ValueError(f"truncate_step must be positive or None, got {truncate_step}")
        if n_clusters is not None and n_clusters < 1:
            raise ValueError(f"n_clusters must be positive or None, got {n_clusters}")
        self.adapter = state_adapter(env)
        if self.adapter.name != self.snapshots.state_kind:
            raise ValueError(f"The snapshots hold {self.snapshots.state_kind} states; this env needs {self.adapter.name}")
        obs_shape = self.snapshots.observations.shape[1:]
        if obs_shape != env.observation_space.shape:
            raise ValueError(f"The snapshots' observations have shape {obs_shape}, the env's {env.observation_space.shape}")
        self.snapshot_steps = snapshot_steps
        self.truncate_step = truncate_step
        self.n_clusters = n_clusters
        self.num_steps = steps_done
        labels = kmeans_1d(self.snapshots.values, n_clusters) if n_clusters else np.zeros(len(self.snapshots), dtype=np.int64)
        self.clusters = [np.flatnonzero(labels == j) for j in range(int(labels.max()) + 1)]
        self._rng = np.random.default_rng()
        self._from_snapshot = False
        self._episode_steps = 0

    @property
    def in_snapshot_phase(self) -> bool:
        """Whether the next reset restores a snapshot."""
        return self.num_steps < self.snapshot_steps

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode_steps = 0
        self._from_snapshot = self.in_snapshot_phase
        if not self._from_snapshot:
            return obs, info
        cluster = int(self._rng.integers(len(self.clusters)))
        index = int(self._rng.choice(self.clusters[cluster]))
        self.adapter.set(self.env, self.snapshots.states[index])
        info = {**copy.deepcopy(self.snapshots.infos[index]), "snapshot_index": index, "snapshot_cluster": cluster}
        return self.snapshots.observations[index].copy(), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.num_steps += 1
        if self._from_snapshot:
            self._episode_steps += 1
            cut = self.truncate_step is not None and self._episode_steps >= self.truncate_step
            truncated = truncated or (not terminated and (cut or not self.in_snapshot_phase))
        return obs, reward, terminated, truncated, info
