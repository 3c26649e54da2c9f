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

Each cost level trains its own agent with its own seed, and a dataset is written only if
its costs bind: a stated share of its episodes (default 20%) lies on each side of the
task's cost limit, and the levels differ in episode cost. Without that, every method
would be "safe" and BC-All would equal BC-Safe. The check's figures (shares, per-level
costs, an episode-cost histogram) are kept in the metadata as ``cost_card``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from typing import Any

import minari
import numpy as np
from minari.data_collector import EpisodeBuffer

from rlkit.data.generate import GenerateConfig, TrainedAgent, collect, existing_dataset, sac_actor, store_lock, train_agent
from rlkit.data.minari import OfflineDataset, local_dataset_id

#: kinds of snapshot a safe dataset can record for each cost level
SAFE_KINDS = ("medium", "expert", "medium-expert")
#: FISOR's (and OSRL's default) evaluation budget of episode cost
DEFAULT_COST_LIMIT = 10.0
#: the share of episodes a safe dataset must hold on each side of its cost limit
DEFAULT_MIN_SHARE = 0.2
#: cost level ``i`` trains and rolls out with seed ``seed + LEVEL_SEED_STRIDE * i``
LEVEL_SEED_STRIDE = 100_000


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

    def penalised() -> CostPenalty:
        return CostPenalty(make_env(config.env_id), penalty)

    return train_agent(config, penalised, tag=f"cost-penalty{penalty:g}")


def episode_costs(episodes: Sequence[EpisodeBuffer]) -> np.ndarray:
    """The total cost of each episode (``info["cost"]`` of its steps; the reset's info carries none)."""
    return np.array([float(np.sum(episode.infos["cost"][1:])) if episode.infos else 0.0 for episode in episodes])


def cost_card(
    costs: np.ndarray, levels: np.ndarray, penalties: Sequence[float], seeds: Sequence[int], cost_limit: float
) -> dict[str, Any]:
    """What a safe dataset holds: the share of episodes on each side of ``cost_limit``, each cost level's
    episode costs, and a histogram of episode costs (10 bins from 0 to twice the limit or the largest cost).

    :param costs: total cost of each episode
    :param levels: the cost level (index into ``penalties``) each episode comes from
    :param penalties: the cost penalty of each level
    :param seeds: the training seed of each level
    :param cost_limit: the task's episode cost budget
    """
    high = max(float(costs.max(initial=0.0)), 2.0 * cost_limit, 1e-9)
    counts, edges = np.histogram(costs, bins=10, range=(0.0, high))
    per_level = []
    for level, (penalty, seed) in enumerate(zip(penalties, seeds, strict=True)):
        mine = costs[levels == level]
        per_level.append(
            {
                "cost_penalty": float(penalty),
                "seed": int(seed),
                "episodes": len(mine),
                "episode_cost_mean": float(mine.mean()) if len(mine) else float("nan"),
                "episode_cost_std": float(mine.std()) if len(mine) else float("nan"),
            }
        )
    return {
        "cost_limit": float(cost_limit),
        "episodes": len(costs),
        "share_within_limit": float(np.mean(costs <= cost_limit)) if len(costs) else 0.0,
        "share_above_limit": float(np.mean(costs > cost_limit)) if len(costs) else 0.0,
        "levels": per_level,
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def check_card(card: dict[str, Any], min_share: float, what: str) -> None:
    """Raise unless the dataset's costs can tell safe from unsafe behaviour.

    :param card: the dataset's :func:`cost_card`
    :param min_share: the share of episodes required on each side of the cost limit
    :param what: names the dataset in the message
    :raises ValueError: when fewer than ``min_share`` of the episodes lie within or above the limit, or when
        every cost level has the same mean episode cost
    """
    limit = card["cost_limit"]
    within, above = card["share_within_limit"], card["share_above_limit"]
    means = ", ".join(f"{lv['episode_cost_mean']:.2f} (penalty {lv['cost_penalty']:g})" for lv in card["levels"])
    if above < min_share or within < min_share:
        side = "exceed" if above < min_share else "stay within"
        share = above if above < min_share else within
        fix = (
            "make the behaviour agents costlier: more train_steps, a negative (cost-seeking) entry in cost_penalties, "
            "or a lower cost threshold of the task"
            if above < min_share
            else "add a cost-averse level (a larger positive entry in cost_penalties) or raise cost_limit"
        )
        raise ValueError(
            f"{what}: only {share:.0%} of {card['episodes']} episodes {side} cost_limit {limit:g} (need at least "
            f"{min_share:.0%} on each side; mean episode cost per level: {means}). A safe dataset must hold both safe "
            f"and unsafe behaviour: {fix}. Nothing was written."
        )
    level_means = [lv["episode_cost_mean"] for lv in card["levels"]]
    if len(level_means) > 1 and float(np.ptp(level_means)) <= 1e-9:
        raise ValueError(
            f"{what}: every cost level has the same mean episode cost ({means}), so the levels are one behaviour: "
            "spread cost_penalties further apart or train the agents longer. Nothing was written."
        )


def generate_safe(
    env_id: str,
    kinds: Sequence[str] = ("expert",),
    size: int | None = None,
    cost_penalties: Sequence[float] = (0.0, 1.0),
    cost_limit: float = DEFAULT_COST_LIMIT,
    min_share: float = DEFAULT_MIN_SHARE,
    **kwargs: Any,
) -> dict[str, str]:
    """Generate (or reuse) DSRL-like safe datasets of ``env_id`` (see the module docstring).

    Each cost level ``i`` trains its own agent, with seed ``seed + LEVEL_SEED_STRIDE * i``. The episodes are
    checked before anything is written: at least ``min_share`` of them must lie within ``cost_limit`` and at
    least ``min_share`` above it, and the levels must differ in mean episode cost. The dataset's metadata keeps
    the check's figures (:func:`cost_card`).

    :param env_id: id for :func:`rlkit.envs.make_env` of an env with ``info["cost"]``
        (``safe/HopperVelocity-v5``, ``toy/hazard-v0``)
    :param kinds: snapshots recorded for each cost level, from :data:`SAFE_KINDS`
    :param size: transitions per kind, split evenly over the cost levels (default by env family)
    :param cost_penalties: the multipliers ``lambda`` of the behaviour agents' cost penalties
    :param cost_limit: the task's episode cost budget the dataset must straddle
    :param min_share: the share of episodes required on each side of ``cost_limit`` (0 turns the check off);
        it gates writing, so a dataset that exists is reused whatever ``min_share`` asks
    :param kwargs: the other fields of :class:`~rlkit.data.generate.GenerateConfig` (budgets, seed, ...)
    :return: kind -> Minari dataset id, for :func:`rlkit.data.load_dataset`
    :raises ValueError: for an unknown kind, no cost level, or episodes that fail the check
    """
    unknown = [kind for kind in kinds if kind not in SAFE_KINDS]
    if unknown:
        raise ValueError(f"Unknown safe dataset kind(s) {unknown}: choose from {list(SAFE_KINDS)}")
    penalties = [float(penalty) for penalty in cost_penalties]
    if not penalties:
        raise ValueError("cost_penalties must name at least one cost level")
    if cost_limit < 0 or not 0.0 <= min_share <= 0.5:
        raise ValueError(f"cost_limit must be >= 0 and min_share in [0, 0.5], got {cost_limit} and {min_share}")
    config = GenerateConfig(env_id=env_id, kinds=list(kinds), size=size, **kwargs)
    ids = {kind: local_dataset_id(env_id, f"safe-{kind}", config.namespace) for kind in config.kinds}

    def settings(kind: str) -> dict[str, Any]:
        return {**config.data_settings(kind), "cost_penalties": penalties, "cost_limit": cost_limit}

    with store_lock(f"{config.namespace}-{env_id}-safe"):
        todo = [kind for kind in config.kinds if not existing_dataset(ids[kind], settings(kind), config.overwrite)]
        if todo:
            _generate_safe(config, penalties, {kind: ids[kind] for kind in todo}, settings, cost_limit, min_share)
    return ids


def _generate_safe(
    config: GenerateConfig, penalties: list[float], ids: dict[str, str], settings: Any, cost_limit: float, min_share: float
) -> None:
    from rlkit.envs import make_env

    env = make_env(config.env_id)
    per_level = max(1, config.size // len(penalties))
    rollouts: dict[str, list[EpisodeBuffer]] = {"medium": [], "expert": []}
    origin: dict[str, list[int]] = {"medium": [], "expert": []}
    needed = {"medium", "expert"} & {part for kind in ids for part in kind.split("-")}
    seeds = [config.seed + LEVEL_SEED_STRIDE * level for level in range(len(penalties))]
    for level, (penalty, seed) in enumerate(zip(penalties, seeds, strict=True)):
        level_config = dataclasses.replace(config, seed=seed)
        agent = _train_penalised(level_config, penalty)
        medium, expert = agent.select(config.medium_fraction)
        for name in sorted(needed):
            act = sac_actor(agent.policy_at(medium if name == "medium" else expert))
            desc = f"{name} rollouts, cost penalty {penalty:g}"
            episodes = collect(
                env, act, per_level, seed + {"medium": 40_000, "expert": 50_000}[name], desc, config.progress_bar
            )
            rollouts[name] += episodes
            origin[name] += [level] * len(episodes)
    cards = {}
    for kind in ids:  # check every kind before writing any
        episodes = [episode for part in kind.split("-") for episode in rollouts[part]]
        levels = np.array([level for part in kind.split("-") for level in origin[part]])
        cards[kind] = cost_card(episode_costs(episodes), levels, penalties, seeds, cost_limit)
        check_card(cards[kind], min_share, f"safe {kind} dataset of {config.env_id}")
    for kind, dataset_id in ids.items():
        episodes = [episode for part in kind.split("-") for episode in rollouts[part]]
        _write_safe(dataset_id, episodes, env, config, kind, penalties, settings(kind), cards[kind])


def _write_safe(
    dataset_id: str,
    episodes: list[EpisodeBuffer],
    env: Any,
    config: GenerateConfig,
    kind: str,
    penalties: list[float],
    settings: dict[str, Any],
    card: dict[str, Any],
) -> None:
    returns = [float(np.sum(episode.rewards)) for episode in episodes]
    costs = episode_costs(episodes)
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
    options = {k: v for k, v in settings.items() if k not in ("env_id", "kind", "cost_penalties")}
    dataset.storage.update_metadata(
        {
            "ref_min_score": min(returns),
            "ref_max_score": max(returns),
            "ref_scores_source": "DSRL: smallest and largest episode reward of the dataset",
            "episode_cost_mean": float(np.mean(costs)),
            "episode_cost_max": float(np.max(costs)),
            "cost_card": json.dumps(card),
            "rlkit_env_id": config.env_id,
            "rlkit_generate": settings,
            "generate_command": f"rlkit.data.safe.generate_safe({config.env_id!r}, kinds=[{kind!r}], "
            f"cost_penalties={penalties}, **{json.dumps(options, sort_keys=True)})",
        }
    )
