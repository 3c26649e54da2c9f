"""Safe offline datasets (DSRL-like): behaviour policies at several cost levels, ``costs`` in the data.

DSRL (Liu et al., https://arxiv.org/abs/2306.09303) records the trajectories of
agents trained under different cost thresholds, so that a dataset holds safe and
unsafe behaviour. :func:`generate_safe` does the same on any env that reports
``info["cost"]``: for each cost penalty ``lambda`` it trains SB3's SAC on
``r - lambda * c`` (:class:`~rlkit.envs.safety.CostPenalty`) with the budgets of
:mod:`rlkit.data.generate`, keeps snapshots, and records ``size / len(cost_penalties)``
transitions of that agent's ``kind`` snapshot (``expert``: best penalised return;
``medium``: a third of the way from random; ``medium-expert``: both) on the
unpenalised env. A negative penalty gives a cost-seeking behaviour policy, the
stand-in for DSRL's high-cost agents where a small training budget leaves a
plain SAC below the cost threshold. The reference scores are DSRL's: the
smallest and largest episode reward of the dataset. The datasets are Minari
datasets ``rlkit/<env>/safe-<kind>-v0``, cached and locked like :mod:`rlkit.data.generate`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Sequence
from typing import Any

import minari
import numpy as np
import torch as th
from minari.data_collector import EpisodeBuffer
from minari.storage.datasets_root_dir import get_dataset_path
from stable_baselines3 import SAC
from stable_baselines3.sac.policies import SACPolicy
from tqdm.auto import tqdm

from rlkit.data.generate import (
    GenerateConfig,
    TrainedAgent,
    _existing,
    _random_return,
    _sac_actor,
    _SnapshotCallback,
    _store_lock,
    collect,
)
from rlkit.data.minari import OfflineDataset, local_dataset_id

#: kinds of snapshot a safe dataset can record for each cost level
SAFE_KINDS = ("medium", "expert", "medium-expert")


def safe_episodes(dataset: OfflineDataset, cost_limit: float) -> OfflineDataset:
    """The episodes of ``dataset`` whose total cost is at most ``cost_limit`` (BC-Safe's data).

    :param dataset: a dataset with ``costs``
    :param cost_limit: the episode cost budget
    :raises ValueError: without costs, or when no episode is within the budget
    """
    if dataset.costs is None:
        raise ValueError(f"{dataset.dataset_id or 'the dataset'} has no costs: a safe dataset needs per-step costs")
    starts = np.concatenate([[0], dataset.episode_ends[:-1]])
    episode_costs = np.add.reduceat(dataset.costs.astype(np.float64), starts)
    keep = episode_costs <= cost_limit
    if not keep.any():
        raise ValueError(
            f"no episode of {dataset.dataset_id or 'the dataset'} has cost <= {cost_limit} "
            f"(smallest: {episode_costs.min():.1f}): raise cost_limit or use a dataset with safe trajectories"
        )
    rows = np.repeat(keep, dataset.episode_lengths)
    return OfflineDataset(
        dataset.observations[rows],
        dataset.actions[rows],
        dataset.rewards[rows],
        dataset.next_observations[rows],
        dataset.terminals[rows],
        dataset.timeouts[rows],
        dataset.costs[rows],
        episode_ends=np.cumsum(dataset.episode_lengths[keep]),
        observation_space=dataset.observation_space,
        action_space=dataset.action_space,
        ref_min_score=dataset.ref_min_score,
        ref_max_score=dataset.ref_max_score,
        env_id=dataset.env_id,
        dataset_id=dataset.dataset_id,
        metadata=dataset.metadata,
    )


def _train_penalised(config: GenerateConfig, penalty: float) -> TrainedAgent:
    """SAC on ``r - penalty * c`` with snapshots (or the cached run with the same settings)."""
    from rlkit.envs import make_env
    from rlkit.envs.safety import CostPenalty

    settings = json.dumps({**config.training_settings(), "cost_penalty": penalty}, sort_keys=True)
    digest = hashlib.sha1(settings.encode()).hexdigest()[:10]
    folder = get_dataset_path() / ".rlkit-agents" / f"{config.env_id.lower().replace('/', '-')}-safe-{digest}"
    if (folder / "training.json").is_file():
        summary = json.loads((folder / "training.json").read_text())
        state_dicts = th.load(folder / "snapshots.pt", weights_only=True)
        snapshots = [{**entry, "state_dict": sd} for entry, sd in zip(summary["snapshots"], state_dicts, strict=True)]
        policy = SACPolicy.load(str(folder / "policy.zip"), device="cpu")
        return TrainedAgent(policy, snapshots, {}, summary["random_return"])

    def penalised() -> CostPenalty:
        return CostPenalty(make_env(config.env_id), penalty)

    random_return = _random_return(penalised(), config.n_ref_episodes, config.seed)
    sac_kwargs = {"buffer_size": config.train_steps, **copy.deepcopy(config.sac_kwargs or {})}
    model = SAC("MlpPolicy", penalised(), learning_starts=config.learning_starts, seed=config.seed, device="cpu", **sac_kwargs)
    desc = f"SAC on {config.env_id}, cost penalty {penalty:g}"
    with tqdm(total=config.train_steps, desc=desc, disable=not config.progress_bar) as pbar:
        callback = _SnapshotCallback(penalised(), config.eval_freq, config.n_eval_episodes, config.seed + 10_000, pbar)
        model.learn(config.train_steps, callback=callback)
    folder.mkdir(parents=True, exist_ok=True)
    model.policy.save(str(folder / "policy.zip"))
    th.save([snap["state_dict"] for snap in callback.snapshots], folder / "snapshots.pt")
    entries = [{"step": snap["step"], "return": snap["return"]} for snap in callback.snapshots]
    summary = {"settings": json.loads(settings), "random_return": random_return, "snapshots": entries}
    (folder / "training.json").write_text(json.dumps(summary, indent=1))
    return TrainedAgent(model.policy, callback.snapshots, {}, random_return)


def generate_safe(
    env_id: str,
    kinds: Sequence[str] = ("expert",),
    size: int | None = None,
    cost_penalties: Sequence[float] = (0.0, 1.0),
    **kwargs: Any,
) -> dict[str, str]:
    """Generate (or reuse) DSRL-like safe datasets of ``env_id`` (see the module docstring).

    :param env_id: id for :func:`rlkit.envs.make_env` of an env with ``info["cost"]``
        (``safe/HopperVelocity-v5``, ``toy/hazard-v0``)
    :param kinds: snapshots recorded for each cost level, from :data:`SAFE_KINDS`
    :param size: transitions per kind, split evenly over the cost levels (default by env family)
    :param cost_penalties: the multipliers ``lambda`` of the behaviour agents' cost penalties
    :param kwargs: the other fields of :class:`~rlkit.data.generate.GenerateConfig` (budgets, seed, ...)
    :return: kind -> Minari dataset id, for :func:`rlkit.data.load_dataset`
    """
    unknown = [kind for kind in kinds if kind not in SAFE_KINDS]
    if unknown:
        raise ValueError(f"Unknown safe dataset kind(s) {unknown}: choose from {list(SAFE_KINDS)}")
    penalties = [float(penalty) for penalty in cost_penalties]
    if not penalties:
        raise ValueError("cost_penalties must name at least one cost level")
    config = GenerateConfig(env_id=env_id, kinds=list(kinds), size=size, **kwargs)
    ids = {kind: local_dataset_id(env_id, f"safe-{kind}", config.namespace) for kind in config.kinds}

    def settings(kind: str) -> dict[str, Any]:
        return {**config.data_settings(kind), "cost_penalties": penalties}

    with _store_lock(f"{config.namespace}-{env_id}-safe"):
        todo = [kind for kind in config.kinds if not _existing(ids[kind], settings(kind), config.overwrite)]
        if todo:
            _generate_safe(config, penalties, {kind: ids[kind] for kind in todo}, settings)
    return ids


def _generate_safe(config: GenerateConfig, penalties: list[float], ids: dict[str, str], settings: Any) -> None:
    from rlkit.envs import make_env

    env = make_env(config.env_id)
    per_level = max(1, config.size // len(penalties))
    rollouts: dict[str, list[EpisodeBuffer]] = {"medium": [], "expert": []}
    needed = {"medium", "expert"} & {part for kind in ids for part in kind.split("-")}
    for level, penalty in enumerate(penalties):
        agent = _train_penalised(config, penalty)
        medium, expert = agent.select(config.medium_fraction)
        for name in sorted(needed):
            seed = config.seed + {"medium": 40_000, "expert": 50_000}[name] + 1_000 * level
            act = _sac_actor(agent.policy_at(medium if name == "medium" else expert))
            desc = f"{name} rollouts, cost penalty {penalty:g}"
            rollouts[name] += collect(env, act, per_level, seed, desc, config.progress_bar)
    for kind, dataset_id in ids.items():
        episodes = [episode for part in kind.split("-") for episode in rollouts[part]]
        _write_safe(dataset_id, episodes, env, config, kind, penalties, settings(kind))


def _write_safe(
    dataset_id: str,
    episodes: list[EpisodeBuffer],
    env: Any,
    config: GenerateConfig,
    kind: str,
    penalties: list[float],
    settings: dict[str, Any],
) -> None:
    returns = [float(np.sum(episode.rewards)) for episode in episodes]
    costs = [float(np.sum(episode.infos["cost"][1:])) if episode.infos else 0.0 for episode in episodes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari warns about every optional field it is not given
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffer=[dataclasses.replace(episode, id=i) for i, episode in enumerate(episodes)],
            env=env,
            algorithm_name="stable-baselines3 SAC with cost penalties",
            author="rlkit",
            author_email="rlkit@users.noreply.github.com",
            code_permalink="rlkit/data/safe.py",
            description=f"DSRL-like safe {kind} dataset of {config.env_id}: SAC on r - lambda c, lambda in {penalties}.",
        )
    dataset.storage.update_metadata(
        {
            "ref_min_score": min(returns),
            "ref_max_score": max(returns),
            "ref_scores_source": "DSRL: smallest and largest episode reward of the dataset",
            "episode_cost_mean": float(np.mean(costs)),
            "episode_cost_max": float(np.max(costs)),
            "rlkit_env_id": config.env_id,
            "rlkit_generate": settings,
            "generate_command": f"rlkit.data.safe.generate_safe({config.env_id!r}, kinds=[{kind!r}], "
            f"cost_penalties={penalties}, **{json.dumps({k: v for k, v in settings.items() if k not in ('env_id', 'kind', 'cost_penalties')}, sort_keys=True)})",
        }
    )
