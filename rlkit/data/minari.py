"""Offline datasets: flat D4RL-style transitions read from Minari.

:class:`OfflineDataset` holds a dataset once, as float32 arrays of transitions
(``observations``, ``actions``, ``rewards``, ``next_observations``,
``terminals``, ``timeouts`` and optional ``costs``), with an episode view for
sequence models and the reference scores of D4RL's normalised score.
:func:`load_dataset` builds one from a local Minari dataset id, a download where
a network exists, or a path.
"""

from __future__ import annotations

import os
import pathlib
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import minari
import numpy as np
from gymnasium import spaces
from minari.storage.datasets_root_dir import get_dataset_path

from rlkit.common.evaluation import normalized_score
from rlkit.data.scores import d4rl_env_name

#: keys a D4RL-style dict of transitions must have (``timeouts`` and ``costs`` are optional)
REQUIRED_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")
#: dataset kinds of D4RL's gym-mujoco suite, as written by :mod:`rlkit.data.generate`
#: the kinds of D4RL, written by default
D4RL_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert")
#: the kind recorded from an env's scripted behaviour (a toy task's own ``scripted_behaviour``, or Meta-World's
#: scripted policy) at one or several levels of Gaussian action noise, without training an agent
SCRIPTED_KIND = "scripted"
#: every kind rlkit generates: D4RL's, ``expert-random`` (a bimodal mix: a share of expert transitions, the
#: rest uniformly random, for methods that must pick the good part of mixed-quality data) and :data:`SCRIPTED_KIND`
KINDS = (*D4RL_KINDS, "expert-random", SCRIPTED_KIND)
#: D4RL env name -> the gymnasium MuJoCo id the generator uses for it
D4RL_GYM_IDS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5", "ant": "Ant-v5"}
#: Minari namespace of the datasets written by :mod:`rlkit.data.generate` (local only, never downloaded)
LOCAL_NAMESPACE = "rlkit"
#: tolerance on the action bounds (float32 rounding of actions saved at the bounds)
ACTION_BOUND_TOL = 1e-5


class Episode(NamedTuple):
    """One episode of an :class:`OfflineDataset`: views (not copies) of its transitions, time first."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    costs: np.ndarray | None


class EpisodeView(Sequence[Episode]):
    """Read-only sequence of the episodes of a dataset (``dataset.episodes[i]``)."""

    def __init__(self, dataset: OfflineDataset) -> None:
        self._dataset = dataset
        self._starts = np.concatenate([[0], dataset.episode_ends[:-1]])

    def __len__(self) -> int:
        return len(self._dataset.episode_ends)

    def __getitem__(self, index: int) -> Episode:  # type: ignore[override]
        index = range(len(self))[index]
        window = slice(int(self._starts[index]), int(self._dataset.episode_ends[index]))
        data = self._dataset
        return Episode(
            observations=data.observations[window],
            actions=data.actions[window],
            rewards=data.rewards[window],
            next_observations=data.next_observations[window],
            terminals=data.terminals[window],
            timeouts=data.timeouts[window],
            costs=None if data.costs is None else data.costs[window],
        )

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))


class OfflineDataset:
    """A dataset of transitions held once, as float32 arrays.

    Every array has one row per transition; ``terminals`` marks true terminations
    (no bootstrap) and ``timeouts`` time-limit truncations. Construction checks
    the data and raises a ``ValueError`` naming the key and the fix for a shape
    mismatch, NaN/inf values or actions outside ``action_space``.

    :param observations: ``(N, *obs_shape)``
    :param actions: ``(N, action_dim)``
    :param rewards: ``(N,)``
    :param next_observations: ``(N, *obs_shape)``
    :param terminals: ``(N,)``, 1 where the episode terminated
    :param timeouts: ``(N,)``, 1 where the episode was truncated (zeros if ``None``)
    :param costs: ``(N,)`` per-step costs of safe tasks, or ``None``
    :param episode_ends: exclusive end index of each episode; by default episodes end at
        terminals, timeouts, and wherever ``next_observations[i] != observations[i + 1]``
    :param observation_space: by default an unbounded Box of the observations' shape
    :param action_space: by default ``Box(-1, 1)`` of the actions' shape
    :param ref_min_score: return of the reference random policy (D4RL's normalised score)
    :param ref_max_score: return of the reference expert policy
    :param env_id: id for :func:`rlkit.envs.make_env` of the env the data comes from
    :param dataset_id: the Minari id (or path) the data was read from
    :param metadata: the Minari metadata, or any extra information
    """

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_observations: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray | None = None,
        costs: np.ndarray | None = None,
        *,
        episode_ends: np.ndarray | None = None,
        observation_space: spaces.Box | None = None,
        action_space: spaces.Box | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        env_id: str | None = None,
        dataset_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.observations = _as_float32("observations", observations, min_ndim=2)
        n = len(self.observations)
        if n == 0:
            raise ValueError("observations is empty: a dataset needs at least one transition")
        self.actions = _as_float32("actions", actions, min_ndim=2, n=n)
        self.rewards = _as_float32("rewards", rewards, n=n, flat=True)
        self.next_observations = _as_float32("next_observations", next_observations, n=n)
        self.terminals = _as_flags("terminals", terminals, n)
        self.timeouts = np.zeros(n, dtype=np.float32) if timeouts is None else _as_flags("timeouts", timeouts, n)
        self.costs = None if costs is None else _as_float32("costs", costs, n=n, flat=True)
        if self.next_observations.shape != self.observations.shape:
            raise ValueError(
                f"next_observations has shape {self.next_observations.shape} but observations {self.observations.shape}: "
                "each transition needs the observation after its action, of the same shape"
            )
        if self.actions.ndim != 2:
            raise ValueError(f"actions must be (N, action_dim), got shape {self.actions.shape}: flatten each action")
        self.observation_space = observation_space or spaces.Box(-np.inf, np.inf, self.observations.shape[1:], np.float32)
        self.action_space = action_space or spaces.Box(-1.0, 1.0, self.actions.shape[1:], np.float32)
        self._check_spaces()
        self.episode_ends = self._episode_ends(episode_ends)
        self.ref_min_score = None if ref_min_score is None else float(ref_min_score)
        self.ref_max_score = None if ref_max_score is None else float(ref_max_score)
        self.env_id = env_id
        self.dataset_id = dataset_id
        self.metadata = dict(metadata or {})

    @classmethod
    def from_dict(cls, data: Mapping[str, np.ndarray], **kwargs: Any) -> OfflineDataset:
        """Build a dataset from a D4RL-style dict (``env.get_dataset()``, ``d4rl.qlearning_dataset``).

        :param data: arrays under :data:`REQUIRED_KEYS`, optionally ``timeouts`` and ``costs``
        :param kwargs: keyword arguments of :class:`OfflineDataset` (spaces, reference scores, ...)
        """
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise ValueError(
                f"The dataset is missing key(s) {missing} (it has {sorted(data)}). A transition dataset needs "
                f"{list(REQUIRED_KEYS)}, optionally 'timeouts' and 'costs'; build next_observations from "
                "observations[1:] within each episode (d4rl.qlearning_dataset does this)"
            )
        arrays = {key: data[key] for key in (*REQUIRED_KEYS, "timeouts", "costs") if key in data}
        return cls(**arrays, **kwargs)

    def __len__(self) -> int:
        return len(self.observations)

    def __repr__(self) -> str:
        name = self.dataset_id or "OfflineDataset"
        return (
            f"<{name}: {len(self)} transitions, {len(self.episode_ends)} episodes, obs {self.observations.shape[1:]}, "
            f"actions {self.actions.shape[1:]}{', costs' if self.costs is not None else ''}>"
        )

    @property
    def episodes(self) -> EpisodeView:
        """The episodes, as views of the flat arrays (for sequence models)."""
        return EpisodeView(self)

    @property
    def episode_lengths(self) -> np.ndarray:
        """Number of transitions of each episode."""
        return np.diff(self.episode_ends, prepend=0)

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), np.concatenate([[0], self.episode_ends[:-1]]))

    def normalized_score(self, episode_return: float | np.ndarray) -> float | np.ndarray:
        """D4RL normalised score (x100) with this dataset's reference scores.

        :param episode_return: undiscounted episode return(s)
        """
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(
                f"{self.dataset_id or 'This dataset'} has no ref_min_score / ref_max_score: set them on the dataset "
                "(D4RL's for its env: rlkit.data.scores.d4rl_ref_scores) or generate it with rlkit.data.generate"
            )
        return normalized_score(episode_return, self.ref_min_score, self.ref_max_score)

    def observation_statistics(self, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (+ ``eps``) of the observations, per dimension, as float32."""
        mean = self.observations.mean(axis=0, dtype=np.float64)
        std = self.observations.std(axis=0, dtype=np.float64) + eps
        return mean.astype(np.float32), std.astype(np.float32)

    def check_compatible(self, observation_space: spaces.Space, action_space: spaces.Space, where: str = "the env") -> None:
        """Raise a ``ValueError`` if the data does not fit these spaces (shapes, action bounds).

        :param observation_space: the observation space the data will be used with
        :param action_space: the action space the data will be used with
        :param where: name of the spaces' owner, for the message
        """
        name = self.dataset_id or "the dataset"
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"{where} has action space {action_space}; offline datasets need a continuous Box action space")
        if self.observations.shape[1:] != observation_space.shape:
            raise ValueError(
                f"observations of {name} have shape {self.observations.shape[1:]} per transition but {where} expects "
                f"{observation_space.shape}: the data was recorded on another env; use the dataset of this env "
                f"(its env is {self.env_id!r}) or pass env=None to take the spaces from the dataset"
            )
        if self.actions.shape[1:] != action_space.shape:
            raise ValueError(
                f"actions of {name} have shape {self.actions.shape[1:]} per transition but {where} expects "
                f"{action_space.shape}: the data was recorded on another env; use the dataset of this env "
                f"(its env is {self.env_id!r}) or pass env=None to take the spaces from the dataset"
            )
        _check_action_bounds(self.actions, action_space, where)

    def _check_spaces(self) -> None:
        if not isinstance(self.observation_space, spaces.Box):
            raise ValueError(
                f"observation_space {self.observation_space} is not a Box: flatten the observations "
                "(gymnasium.spaces.flatten) and pass the flattened Box space"
            )
        if self.observation_space.shape != self.observations.shape[1:]:
            raise ValueError(
                f"observations have shape {self.observations.shape[1:]} per transition but observation_space "
                f"{self.observation_space.shape}: pass the observation space of the env that recorded the data"
            )
        if not isinstance(self.action_space, spaces.Box) or self.action_space.shape != self.actions.shape[1:]:
            raise ValueError(
                f"actions have shape {self.actions.shape[1:]} per transition but action_space is {self.action_space}: "
                "pass the Box action space of the env that recorded the data"
            )
        _check_action_bounds(self.actions, self.action_space, "action_space")

    def _episode_ends(self, episode_ends: np.ndarray | None) -> np.ndarray:
        n = len(self)
        if episode_ends is None:
            done = (self.terminals > 0) | (self.timeouts > 0)
            jumps = self.next_observations[:-1] != self.observations[1:]
            done[:-1] |= jumps.reshape(len(jumps), -1).any(axis=1)
            done[-1] = True
            return np.flatnonzero(done) + 1
        ends = np.asarray(episode_ends, dtype=np.int64)
        if ends.ndim != 1 or len(ends) == 0 or ends[-1] != n or np.any(np.diff(ends, prepend=0) <= 0):
            raise ValueError(
                f"episode_ends must be strictly increasing end indices whose last entry is the number of transitions ({n}); "
                "leave it None to derive episodes from terminals and timeouts"
            )
        return ends


def _as_float32(key: str, array: Any, n: int | None = None, min_ndim: int = 1, flat: bool = False) -> np.ndarray:
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{key} must be numeric, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if flat and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if flat and array.ndim != 1:
        raise ValueError(f"{key} must have one value per transition, shape (N,), got {array.shape}")
    if array.ndim < min_ndim:
        raise ValueError(f"{key} must have shape (N, ...) with at least {min_ndim} dimensions, got {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"{key} has {len(array)} rows but observations has {n}: every key needs one row per transition")
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(array), -1).any(axis=1))
        raise ValueError(
            f"{key} has {int(bad.sum())} NaN/inf values in {len(rows)} transitions (first at index {rows[0]}): "
            "drop or repair those transitions before training"
        )
    return array


def _as_flags(key: str, array: Any, n: int) -> np.ndarray:
    flags = _as_float32(key, array, n=n, flat=True)
    if not np.isin(flags, (0.0, 1.0)).all():
        raise ValueError(f"{key} must hold 0/1 (or booleans), got values {np.unique(flags)[:5]}")
    return flags


def _check_action_bounds(actions: np.ndarray, action_space: spaces.Box, where: str) -> None:
    low, high = action_space.low, action_space.high
    tol = ACTION_BOUND_TOL * np.maximum(1.0, np.abs(np.stack([low, high]))).max(axis=0)
    below, above = actions < low - tol, actions > high + tol
    if below.any() or above.any():
        raise ValueError(
            f"actions lie outside the bounds of {where} ([{low.min()}, {high.max()}]): {int(below.sum() + above.sum())} "
            f"values, min {actions.min():.4g}, max {actions.max():.4g}; clip them (np.clip(actions, low, high)) or "
            "rescale them to the env's action space"
        )


def local_dataset_id(env_id: str, kind: str, namespace: str = "rlkit") -> str:
    """Minari id of a dataset written by :mod:`rlkit.data.generate`: ``rlkit/hopper-v5/medium-replay-v0``.

    :param env_id: the :func:`rlkit.envs.make_env` id, e.g. ``Hopper-v5`` or ``toy/reach-v0``
    :param kind: one of :data:`KINDS`
    :param namespace: Minari namespace
    """
    return f"{namespace}/{env_id.lower().replace('/', '-')}/{kind}-v0"


def load_dataset(  # noqa: C901 (one dispatch over the kinds of input, each a few lines)
    id_or_path: str | os.PathLike | OfflineDataset | minari.MinariDataset, download: bool = True
) -> OfflineDataset:
    """Load an offline dataset as flat float32 transitions.

    :param id_or_path: a Minari dataset id (``mujoco/hopper/medium-v0``, ``rlkit/hopper-v5/medium-v0``),
        the folder of a Minari dataset, a ``MinariDataset``, or an :class:`OfflineDataset` (returned as is)
    :param download: download an id that is not in the local store (``$MINARI_DATASETS_PATH``
        or ``~/.minari/datasets``); needs a network and ``minari[hf]``
    :return: the dataset, with ``ref_min_score`` / ``ref_max_score`` from its metadata
    :raises ValueError: for an id that is neither local nor downloadable, naming the command that generates it
    """
    if isinstance(id_or_path, OfflineDataset):
        return id_or_path
    if isinstance(id_or_path, minari.MinariDataset):
        return from_minari(id_or_path)
    if not isinstance(id_or_path, (str, os.PathLike)):
        raise ValueError(f"load_dataset needs a Minari id, a path or a dataset, got {type(id_or_path).__name__}")
    path = pathlib.Path(id_or_path)
    if path.is_dir():
        data_path = path / "data" if (path / "data").is_dir() else path
        if not (data_path / "metadata.json").is_file():
            raise ValueError(f"{path} is not a Minari dataset folder: it has no data/metadata.json")
        return from_minari(minari.MinariDataset(data_path))
    dataset_id = str(id_or_path)
    try:
        minari.dataset.minari_dataset.parse_dataset_id(dataset_id)
    except ValueError as error:
        raise ValueError(
            f"{dataset_id!r} is neither a folder nor a Minari id (namespace/name-vN, e.g. mujoco/hopper/medium-v0)"
        ) from error
    if not (get_dataset_path(dataset_id) / "data").is_dir():
        if dataset_id.startswith(f"{LOCAL_NAMESPACE}/"):
            raise ValueError(_not_generated_message(dataset_id))
        if not download:
            raise ValueError(_not_found_message(dataset_id, "download=False"))
        unreachable = _unreachable_hub()
        if unreachable is not None:
            raise ValueError(_not_found_message(dataset_id, unreachable))
        try:
            minari.download_dataset(dataset_id)
        except Exception as error:  # any failure to download (no network, no minari[hf], unknown id) gets the same advice
            # the download's own traceback adds nothing to the message (and hides it): one line is enough
            raise ValueError(_not_found_message(dataset_id, f"{type(error).__name__}: {error}")) from None
    return from_minari(minari.load_dataset(dataset_id))


def _unreachable_hub(timeout: float = 3.0) -> str | None:
    """Why the dataset hub cannot be reached (one TCP connection, ``timeout`` seconds), or ``None`` if it can.

    Minari's download retries a failed connection for about 25 s; without a network
    this check fails in at most ``timeout`` seconds instead.

    :param timeout: seconds to wait for the connection
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"no network: cannot reach {host}:{port} ({error.strerror or error})"
    return None


def _not_found_message(dataset_id: str, reason: str) -> str:
    env_name = d4rl_env_name(dataset_id)
    kind = next((k for k in sorted(KINDS, key=len, reverse=True) if f"/{k}-v" in f"/{dataset_id}"), "medium")
    env_id = D4RL_GYM_IDS.get(env_name or "", "<env id>")
    return (
        f"Dataset {dataset_id!r} is not in the local Minari store ({get_dataset_path()}) and could not be downloaded "
        f"({reason}). Generate a D4RL-style dataset locally: `python -m rlkit.data.generate --env {env_id} --kinds {kind}`, "
        f"then load {local_dataset_id(env_id, kind)!r}; or point MINARI_DATASETS_PATH to the folder that holds {dataset_id!r}"
    )


def _not_generated_message(dataset_id: str) -> str:
    """The command that generates a missing ``rlkit/<env>/<kind>-v0`` dataset (such ids are never downloaded)."""
    import gymnasium as gym

    import rlkit.envs  # noqa: F401  registers the prefixed ids, so that gym.registry lists them

    _, env_part, kind_part = [*dataset_id.split("/"), "", ""][:3]
    kind = kind_part.rsplit("-v", 1)[0] if kind_part.rsplit("-v", 1)[0] in KINDS else "medium"
    env_id = next((e for e in gym.registry if e.lower().replace("/", "-") == env_part), "<env id>")
    return (
        f"Dataset {dataset_id!r} is not in the local Minari store ({get_dataset_path()}); {LOCAL_NAMESPACE}/ datasets are "
        f"made on this machine, never downloaded. Generate it: `python -m rlkit.data.generate --env {env_id} --kinds {kind}`, "
        f"or point MINARI_DATASETS_PATH to the folder that holds it"
    )


def from_minari(dataset: minari.MinariDataset) -> OfflineDataset:
    """Flatten a ``MinariDataset`` into transitions (one copy of its observations and actions).

    Per-step costs are read from ``infos["cost"]`` where present.

    :param dataset: the Minari dataset
    """
    name = dataset.spec.dataset_id
    observation_space, action_space = dataset.observation_space, dataset.action_space
    for key, space in (("observation", observation_space), ("action", action_space)):
        if not isinstance(space, spaces.Box):
            raise ValueError(
                f"{name} has {key} space {space}; rlkit's offline algorithms need Box spaces (flatten Dict observations first)"
            )
    n = dataset.total_steps
    obs = np.empty((n, *observation_space.shape), dtype=np.float32)
    next_obs = np.empty_like(obs)
    actions = np.empty((n, *action_space.shape), dtype=np.float32)
    rewards, terminals, timeouts = (np.empty(n, dtype=np.float32) for _ in range(3))
    costs: np.ndarray | None = None
    episode_ends = []
    start = 0
    for episode in dataset.storage.get_episodes(dataset.episode_indices):
        length = len(episode["rewards"])
        window = slice(start, start + length)
        if len(episode["observations"]) != length + 1:
            raise ValueError(
                f"episode {episode['id']} of {name} has {len(episode['observations'])} observations for {length} steps; "
                "Minari episodes need T + 1 observations (the reset one included)"
            )
        obs[window], next_obs[window] = episode["observations"][:-1], episode["observations"][1:]
        actions[window], rewards[window] = episode["actions"], episode["rewards"]
        terminals[window], timeouts[window] = episode["terminations"], episode["truncations"]
        infos = episode["infos"] or {}
        if "cost" in infos:
            costs = np.zeros(n, dtype=np.float32) if costs is None else costs
            step_costs = np.asarray(infos["cost"], dtype=np.float32).reshape(-1)
            costs[window] = step_costs[-length:]  # infos hold T + 1 entries, the first from reset
        start += length
        episode_ends.append(start)
    metadata = {k: v for k, v in dataset.storage.metadata.items() if k not in ("observation_space", "action_space")}
    env_spec = dataset.env_spec
    return OfflineDataset(
        obs,
        actions,
        rewards,
        next_obs,
        terminals,
        timeouts,
        costs,
        episode_ends=np.asarray(episode_ends),
        observation_space=observation_space,
        action_space=action_space,
        ref_min_score=metadata.get("ref_min_score"),
        ref_max_score=metadata.get("ref_max_score"),
        env_id=metadata.get("rlkit_env_id") or (env_spec.id if env_spec is not None else None),
        dataset_id=name,
        metadata=metadata,
    )
