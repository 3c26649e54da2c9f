"""D4RL reference returns and the normalised score.

D4RL reports ``100 * (R - R_random) / (R_expert - R_random)`` where ``R`` is an
undiscounted episode return and ``R_random`` / ``R_expert`` are the returns of a
random and an expert policy (``d4rl/infos.py``; every gym-mujoco dataset of an
env, v0 to v2, shares the same pair).
"""

from __future__ import annotations

import re

import numpy as np

from rlkit.common.evaluation import normalized_score

#: env name -> (ref_min_score, ref_max_score), from D4RL's ``infos.py``
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


def d4rl_env_name(name: str) -> str | None:
    """The D4RL env name in a gymnasium, D4RL or Minari id, or ``None``.

    ``"Hopper-v5"``, ``"hopper-medium-v2"``, ``"mujoco/hopper/medium-v0"`` and
    ``"rlkit/hopper-v5/medium-replay-v0"`` all give ``"hopper"``;
    ``"toy/reach-v0"`` and ``"AntMaze_UMaze-v5"`` give ``None``.

    :param name: an environment or dataset id
    """
    tokens = re.split(r"[/\-_]", name.lower())
    matches = [token for token in tokens if token in D4RL_REF_SCORES]
    return matches[0] if matches else None


def d4rl_ref_scores(name: str) -> tuple[float, float] | None:
    """D4RL's ``(ref_min_score, ref_max_score)`` for an env or dataset id, ``None`` if D4RL has none.

    :param name: an environment or dataset id (see :func:`d4rl_env_name`)
    """
    env_name = d4rl_env_name(name)
    return None if env_name is None else D4RL_REF_SCORES[env_name]


def d4rl_normalized_score(name: str, episode_return: float | np.ndarray) -> float | np.ndarray:
    """D4RL normalised score (x100) of return(s) on the env of ``name``.

    :param name: an environment or dataset id of hopper, halfcheetah, walker2d or ant
    :param episode_return: undiscounted episode return(s)
    """
    refs = d4rl_ref_scores(name)
    if refs is None:
        raise ValueError(
            f"D4RL has no reference scores for {name!r} (it has {sorted(D4RL_REF_SCORES)}); "
            "use the dataset's own ref_min_score / ref_max_score (OfflineDataset.normalized_score)"
        )
    return normalized_score(episode_return, *refs)


#: DSRL's velocity task -> (min, max) episode reward of its datasets (``dsrl/infos.py``; Gymnasium MuJoCo v4 robots)
DSRL_REWARD_RANGES: dict[str, tuple[float, float]] = {
    "HalfCheetahVelocity": (5.7509765625, 2806.93310546875),
    "AntVelocity": (6.1519, 2976.2766),
    "HopperVelocity": (37.0515, 1911.3967),
    "Walker2dVelocity": (18.6685, 3418.2239),
    "SwimmerVelocity": (0.0711, 238.9583),
}


def dsrl_normalized_reward(episode_return: float | np.ndarray, reward_min: float, reward_max: float) -> float | np.ndarray:
    """DSRL's normalised reward ``(R - r_min) / (r_max - r_min)`` (not x100), with the dataset's extreme episode rewards.

    :param episode_return: undiscounted episode reward(s)
    :param reward_min: smallest episode reward of the dataset (DSRL: ``MIN_EPISODE_REWARD``)
    :param reward_max: largest episode reward of the dataset (DSRL: ``MAX_EPISODE_REWARD``)
    """
    return normalized_score(episode_return, reward_min, reward_max) / 100.0


def dsrl_normalized_cost(episode_cost: float | np.ndarray, cost_limit: float) -> float | np.ndarray:
    """DSRL's normalised cost ``(C + eps) / (kappa + eps)`` with ``eps = 1`` if ``kappa = 0`` else 0; safe iff <= 1.

    :param episode_cost: undiscounted episode cost(s)
    :param cost_limit: the episode cost budget ``kappa``
    """
    if cost_limit < 0:
        raise ValueError(f"cost_limit must be >= 0, got {cost_limit}")
    eps = 1.0 if cost_limit == 0 else 0.0
    normalized = (np.asarray(episode_cost, dtype=np.float64) + eps) / (cost_limit + eps)
    return float(normalized) if normalized.ndim == 0 else normalized
