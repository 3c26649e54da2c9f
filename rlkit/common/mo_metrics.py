"""Multi-objective metrics of a set of return vectors (all objectives maximised).

* :func:`hypervolume`: the Lebesgue measure dominated by the front above a reference point,
  computed by moocore (never by hand);
* :func:`expected_utility`: mean over a simplex grid of weights of the best linear utility;
* :func:`sparsity`: PGMORL's sparsity (lower is better; 0 for fewer than two points);
* :func:`crowding_distance`: NSGA-II's crowding distance, used by C-MORL to select sparse regions;
* :func:`pareto_mask` and :func:`simplex_grid`, the helpers they share with the algorithms.

Definitions follow C-MORL's and PGMORL's evaluation (Liu et al., 2025, App. E; Xu et al., 2020).
"""

from __future__ import annotations

import moocore
import numpy as np


def _as_points(points: np.ndarray | list) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(1, -1) if array.size else array.reshape(0, 0)
    if array.ndim != 2:
        raise ValueError(f"points must be an (n_points, n_objectives) array, got shape {array.shape}")
    return array


def pareto_mask(points: np.ndarray | list) -> np.ndarray:
    """Which points are Pareto-optimal (maximisation); of identical points only the first is kept.

    :param points: ``(n_points, n_objectives)`` values
    :return: boolean mask of shape ``(n_points,)``
    """
    array = _as_points(points)
    keep = np.ones(len(array), dtype=bool)
    for i, point in enumerate(array):
        others = np.delete(np.arange(len(array)), i)
        dominated = np.any(np.all(array[others] >= point, axis=1) & np.any(array[others] > point, axis=1))
        duplicate_before = np.any(np.all(array[:i] == point, axis=1))
        keep[i] = not dominated and not duplicate_before
    return keep


def hypervolume(points: np.ndarray | list, ref_point: np.ndarray | list) -> float:
    """Hypervolume of ``points`` with respect to ``ref_point`` (maximisation).

    Only points that strictly dominate the reference point contribute; an empty
    set has hypervolume 0.

    :param points: ``(n_points, n_objectives)`` values
    :param ref_point: ``(n_objectives,)`` reference point
    :return: the dominated volume
    """
    array = _as_points(points)
    ref = np.asarray(ref_point, dtype=np.float64).reshape(-1)
    if len(array) == 0:
        return 0.0
    if array.shape[1] != len(ref):
        raise ValueError(f"points have {array.shape[1]} objectives but ref_point has {len(ref)}")
    above = array[np.all(array > ref, axis=1)]
    if len(above) == 0:
        return 0.0
    return float(moocore.hypervolume(above, ref=ref, maximise=True))


def simplex_grid(n_objectives: int, step: float, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Weights on the simplex by C-MORL's enumeration.

    The first ``n_objectives - 1`` weights run over ``low, low + step, ... <= high`` while their sum
    stays at most 1; the last weight is ``1 - sum`` and is not bounded by ``low``/``high``. With
    ``low=0, high=1`` this is the full grid of step ``step`` (``step=0.5`` and two objectives:
    ``(0, 1), (0.5, 0.5), (1, 0)``).

    :param n_objectives: number of objectives
    :param step: grid step
    :param low: smallest value of the enumerated weights
    :param high: largest value of the enumerated weights
    :return: ``(n_weights, n_objectives)`` array
    """
    if n_objectives < 1 or step <= 0:
        raise ValueError(f"need n_objectives >= 1 and step > 0, got {n_objectives} and {step}")
    values = np.round(np.arange(low, high + step / 2, step), 10)
    weights: list[list[float]] = []

    def extend(prefix: list[float]) -> None:
        if len(prefix) == n_objectives - 1:
            weights.append([*prefix, round(1.0 - sum(prefix), 10)])
            return
        for value in values:
            if sum(prefix) + value <= 1.0 + 1e-9:
                extend([*prefix, float(value)])

    extend([])
    return np.asarray(weights, dtype=np.float64)


def expected_utility(points: np.ndarray | list, weights: np.ndarray | None = None, step: float = 0.01) -> float:
    """Expected utility ``mean_w max_p w . p`` over a set of weights.

    :param points: ``(n_points, n_objectives)`` values
    :param weights: ``(n_weights, n_objectives)`` weights; default: :func:`simplex_grid` with ``step``
    :param step: grid step of the default weights (C-MORL: 0.01 for two objectives)
    :return: the expected utility (``nan`` for an empty set)
    """
    array = _as_points(points)
    if len(array) == 0:
        return float("nan")
    if weights is None:
        weights = simplex_grid(array.shape[1], step)
    return float(np.mean(np.max(np.asarray(weights) @ array.T, axis=1)))


def sparsity(points: np.ndarray | list) -> float:
    """PGMORL's sparsity: ``sum_j sum_i (P_j(i+1) - P_j(i))^2 / (|P| - 1)`` over sorted objective values.

    :param points: ``(n_points, n_objectives)`` values (usually a Pareto front)
    :return: the sparsity; 0 for fewer than two points
    """
    array = _as_points(points)
    if len(array) < 2:
        return 0.0
    gaps = np.diff(np.sort(array, axis=0), axis=0)
    return float(np.sum(gaps**2) / (len(array) - 1))


def crowding_distance(points: np.ndarray | list) -> np.ndarray:
    """NSGA-II's crowding distance, ``sum_j (f_j(next) - f_j(prev)) / (f_j,max - f_j,min)``.

    Points at either end of an objective's sorted order get ``inf``. An objective whose values are
    all equal carries no information and is skipped (no division by zero, no ``inf``).

    :param points: ``(n_points, n_objectives)`` values
    :return: ``(n_points,)`` distances
    """
    array = _as_points(points)
    distance = np.zeros(len(array))
    if len(array) == 0:
        return distance
    for values in array.T:
        spread = values.max() - values.min()
        if spread <= 0:
            continue
        order = np.argsort(values, kind="stable")
        distance[order[0]] = distance[order[-1]] = np.inf
        distance[order[1:-1]] += (values[order[2:]] - values[order[:-2]]) / spread
    return distance
