"""Cross-task preference alignment (CPA, Liu et al., 2024, PEARL): Gromov-Wasserstein label transfer.

Source segments x_1..x_M carry labelled pairs (k, l) with y_kl = P(x_l preferred to x_k); target
segments y_1..y_N carry none. The two tasks share no metric, so only within-task distances are
compared:

1. features: each segment's (s, a) steps, standardised per channel with the task's own statistics,
   then flattened (:func:`segment_features`);
2. C^S_kl = ||f(x_k) - f(x_l)||, C^T_ij = ||f(y_i) - f(y_j)||, each divided by its maximum
   (:func:`within_task_distances`);
3. T* = argmin_{T in Pi(u, v)} sum_{k,l,i,j} (C^S_kl - C^T_ij)^2 T_ki T_lj with uniform u, v: exact GW by
   POT's conditional gradient (or, with ``epsilon > 0``, entropic GW by projected gradient), from
   several initial plans, keeping the lowest GW distance (:func:`gromov_wasserstein_alignment`; GW is
   non-convex);
4. label transfer in the conditional form (:func:`transfer_labels`): with A^ij_kl = T_ki T_lj / (v_i v_j)
   = P(k | i) P(l | j) and P_S the labelled pairs (symmetrised: (l, k) with 1 - y_kl),

       y_hat_ij = sum_{(k,l) in P_S} A^ij_kl y_kl / sum_{(k,l) in P_S} A^ij_kl,

   normalised over the labelled pairs, so an identity coupling returns the source labels exactly
   and unlabelled source pairs never dilute a label toward 0 (the unnormalised sum gives 1/9
   instead of 1 with three identical segments).

Which target pairs get a label (PEARL's code is not public; this is this implementation's choice):
the image of each labelled source pair, (argmax_i T_ki, argmax_j T_lj) (:func:`matched_target_pairs`),
so there are as many transferred pairs as source labels and each has its labelled source pair
behind it; pairs whose two segments map to the same target segment are dropped. Also chosen
here: Euclidean distances of per-channel standardised flattened segments, exact (not entropic)
GW by default, restarts from u v^T and from random vertices of Pi(u, v) (exact transport plans of random
costs), and soft labels kept as they are.

GW is invariant to isometries: on a task pair whose distance structure is symmetric the plan may
map good segments to bad ones and invert every label without changing its cost. Check the
transferred labels against a hidden target teacher before trusting RL results on them
(:func:`~rlkit.common.preference.pool_label_accuracy`). Memory is O(M^2 + N^2 + M N) floats.

Exact and entropic GW: on a task pair related by an isometry both find the hidden matching (the
entropic plan's argmax is the exact one's for epsilon <= 5e-3 on the tests' 30-point problem) and
the entropic GW objective falls toward the exact one as epsilon shrinks. Between unrelated distance
structures the two reach GW objectives within a few percent of each other but may stop in different
near-tied local minima, so their plans, and the labels they transfer, can differ there; exact GW is
the default because it needs no epsilon to choose.
"""

from __future__ import annotations

import resource
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np
import ot

from rlkit.common.preference import PreferencePool, dataset_fingerprint
from rlkit.common.sequence import Windows, WindowSampler
from rlkit.data.minari import OfflineDataset


def segment_features(windows: Windows) -> np.ndarray:
    """Flattened (s, a) segments, each channel standardised over every step of the set (per-task normalisation).

    :param windows: N segments of H steps (no padding)
    :return: shape ``(N, H * (obs_dim + action_dim))``, float64
    """
    steps = np.concatenate([windows.observations, windows.actions], axis=-1).astype(np.float64)
    flat = steps.reshape(-1, steps.shape[-1])
    std = flat.std(axis=0)
    steps = (steps - flat.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return steps.reshape(len(steps), -1)


def within_task_distances(features: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``features``, divided by their maximum.

    :param features: shape ``(N, D)``
    :return: shape ``(N, N)``, symmetric, zero diagonal, maximum 1 (all zeros if every row is the same)
    """
    distances = ot.dist(features, features, metric="euclidean")
    np.fill_diagonal(distances, 0.0)
    largest = distances.max()
    return distances / largest if largest > 0 else distances


@dataclass
class GWAlignment:
    """The result of :func:`gromov_wasserstein_alignment`."""

    #: the kept plan T, shape ``(M, N)``, marginals u and v
    plan: np.ndarray
    #: its GW distance (the lowest of the restarts)
    gw_dist: float
    #: which restart it came from (0: the product plan u v^T)
    restart: int
    #: the GW distance of every restart
    gw_dists: list[float] = field(default_factory=list)


def gw_objective(cost_source: np.ndarray, cost_target: np.ndarray, plan: np.ndarray) -> float:
    """sum_{k,l,i,j} (C^S_kl - C^T_ij)^2 T_ki T_lj, the square-loss GW objective of ``plan`` (marginals from the plan)."""
    const, h_source, h_target = ot.gromov.init_matrix(
        cost_source, cost_target, plan.sum(axis=1), plan.sum(axis=0), "square_loss"
    )
    return float(ot.gromov.gwloss(const, h_source, h_target, plan))


def random_vertex_plan(p: np.ndarray, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An exact transport plan of marginals ``p`` and ``q`` for a random cost: a random vertex of Pi(p, q)."""
    return ot.emd(p, q, rng.random((len(p), len(q))))


def gromov_wasserstein_alignment(
    cost_source: np.ndarray,
    cost_target: np.ndarray,
    p: np.ndarray | None = None,
    q: np.ndarray | None = None,
    n_restarts: int = 5,
    seed: int = 0,
    max_iter: int = 10_000,
    epsilon: float = 0.0,
) -> GWAlignment:
    """GW (square loss) between two within-task cost matrices, the best of ``n_restarts`` initial plans.

    Exact GW (POT's conditional gradient) with ``epsilon == 0``; entropic GW of regularisation
    ``epsilon`` (POT's projected gradient, Peyre et al. 2016) otherwise. Either way the kept plan's
    ``gw_dist`` is its unregularised GW objective, so restarts and solvers compare on one scale.

    Restart 0 starts from the product plan u v^T (POT's default), the others from random vertices of
    Pi(u, v) (:func:`random_vertex_plan`). The plan with the lowest GW distance is kept.

    :param cost_source: C^S, shape ``(M, M)``
    :param cost_target: C^T, shape ``(N, N)``
    :param p: source marginal u (default uniform)
    :param q: target marginal v (default uniform)
    :param n_restarts: number of initial plans
    :param seed: seed of the random initial plans
    :param max_iter: solver iterations per restart
    :param epsilon: entropic regularisation; 0 for exact GW
    """
    if n_restarts < 1:
        raise ValueError(f"n_restarts must be at least 1, got {n_restarts}")
    for name, cost in (("cost_source", cost_source), ("cost_target", cost_target)):
        if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
            raise ValueError(f"{name} must be a square within-task distance matrix, got shape {cost.shape}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be 0 (exact GW) or positive (entropic GW), got {epsilon}")
    p = ot.unif(len(cost_source)) if p is None else np.asarray(p, np.float64)
    q = ot.unif(len(cost_target)) if q is None else np.asarray(q, np.float64)
    rng = np.random.default_rng(seed)
    best: GWAlignment | None = None
    dists = []
    for restart in range(n_restarts):
        start = None if restart == 0 else random_vertex_plan(p, q, rng)
        if epsilon == 0:
            plan, log = ot.gromov.gromov_wasserstein(
                cost_source, cost_target, p=p, q=q, loss_fun="square_loss", G0=start, log=True, max_iter=max_iter
            )
            dists.append(float(log["gw_dist"]))
        else:
            plan = ot.gromov.entropic_gromov_wasserstein(
                cost_source, cost_target, p, q, "square_loss", epsilon=epsilon, G0=start, max_iter=max_iter
            )
            dists.append(gw_objective(cost_source, cost_target, plan))
        if best is None or dists[-1] < best.gw_dist:
            best = GWAlignment(np.asarray(plan), dists[-1], restart)
    assert best is not None
    best.gw_dists = dists
    return best


def transfer_labels(
    plan: np.ndarray,
    source_pairs: np.ndarray,
    source_labels: np.ndarray,
    target_pairs: np.ndarray,
    symmetrize: bool = True,
) -> np.ndarray:
    """y_hat_ij = T[:, i]^T (W o Y) T[:, j] / T[:, i]^T W T[:, j]: labels of target pairs through the coupling.

    W counts the labelled source pairs (k, l) and W o Y sums their labels (a pair labelled twice
    gets the mean); with ``symmetrize`` each (k, l) also adds (l, k) with 1 - y_kl, so that swapping a
    target pair gives 1 - y_hat. Dividing T by the marginals (the conditional coupling) cancels in
    the ratio.

    :param plan: T, shape ``(M, N)``
    :param source_pairs: labelled source pairs (k, l), shape ``(P, 2)``
    :param source_labels: y_kl = P(x_l preferred to x_k), shape ``(P,)``
    :param target_pairs: target pairs (i, j) to label, shape ``(Q, 2)``
    :param symmetrize: add the reversed pairs
    :return: y_hat_ij = P(y_j preferred to y_i), shape ``(Q,)``; NaN where no labelled pair supports (i, j)
    """
    plan = np.asarray(plan, np.float64)
    source_pairs, target_pairs = np.asarray(source_pairs, np.int64), np.asarray(target_pairs, np.int64)
    labels = np.asarray(source_labels, np.float64)
    if source_pairs.ndim != 2 or source_pairs.shape[1] != 2 or len(source_pairs) != len(labels):
        raise ValueError("source_pairs must have shape (P, 2) and source_labels shape (P,)")
    n_source = plan.shape[0]
    weights = np.zeros((n_source, n_source))
    labelled = np.zeros((n_source, n_source))
    np.add.at(weights, (source_pairs[:, 0], source_pairs[:, 1]), 1.0)
    np.add.at(labelled, (source_pairs[:, 0], source_pairs[:, 1]), labels)
    if symmetrize:
        np.add.at(weights, (source_pairs[:, 1], source_pairs[:, 0]), 1.0)
        np.add.at(labelled, (source_pairs[:, 1], source_pairs[:, 0]), 1.0 - labels)
    first, second = target_pairs[:, 0], target_pairs[:, 1]
    numerator = np.einsum("kq,kq->q", plan[:, first], labelled @ plan[:, second])
    denominator = np.einsum("kq,kq->q", plan[:, first], weights @ plan[:, second])
    with np.errstate(invalid="ignore", divide="ignore"):
        result = numerator / denominator
    return np.where(denominator > 1e-300, np.clip(result, 0.0, 1.0), np.nan)


def matched_target_pairs(plan: np.ndarray, source_pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image of each source pair (k, l) under the plan: (argmax_i T_ki, argmax_j T_lj).

    :param plan: T, shape ``(M, N)``
    :param source_pairs: shape ``(P, 2)``
    :return: the target pairs whose two segments differ, shape ``(Q, 2)``, and the indices of the
        source pairs they come from, shape ``(Q,)``
    """
    image = np.asarray(plan).argmax(axis=1)
    pairs = image[np.asarray(source_pairs, np.int64)]
    keep = np.flatnonzero(pairs[:, 0] != pairs[:, 1])
    return pairs[keep], keep


@dataclass
class TransferReport:
    """Sizes, cost and memory of one :func:`transfer_preferences` call."""

    #: M, source segments aligned
    n_source_segments: int
    #: N, target segments aligned
    n_target_segments: int
    #: labelled source pairs used
    n_source_labels: int
    #: target pairs labelled
    n_transferred: int
    #: GW distance of the kept plan, and of every restart
    gw_dist: float
    gw_dists: list[float]
    #: seconds of the distance matrices and GW
    seconds: float
    #: peak memory allocated by numpy during the alignment (tracemalloc), MiB
    peak_alloc_mib: float
    #: peak resident set size of the process after the alignment, MiB
    peak_rss_mib: float

    def as_info(self) -> dict[str, float]:
        """The figures as floats, for ``progress_info``."""
        return {
            "gw_source_segments": float(self.n_source_segments),
            "gw_target_segments": float(self.n_target_segments),
            "transferred_pairs": float(self.n_transferred),
            "gw_dist": self.gw_dist,
            "gw_seconds": self.seconds,
            "gw_peak_alloc_mib": self.peak_alloc_mib,
            "peak_rss_mib": self.peak_rss_mib,
        }


def transfer_preferences(
    source_dataset: OfflineDataset,
    source_pool: PreferencePool,
    target_dataset: OfflineDataset,
    n_target_segments: int | None = None,
    seed: int = 0,
    n_restarts: int = 5,
    max_iter: int = 10_000,
    epsilon: float = 0.0,
) -> tuple[PreferencePool, TransferReport]:
    """CPA from a labelled source pool to a target dataset: a :class:`PreferencePool` of the target with transferred labels.

    The source segments are the 2 N_q segments of ``source_pool``; N target segments of the same
    length are drawn from the target dataset (inside their episodes). The target pool's ``scores``
    are the true window returns of its segments (the hidden target teacher, never used for
    training: :func:`~rlkit.common.preference.pool_label_accuracy` reads them) and its ``targets``
    the transferred soft labels.

    :param source_dataset: the source task's dataset
    :param source_pool: labelled pairs of the source dataset
    :param target_dataset: the target task's dataset (its rewards are read only for ``scores``)
    :param n_target_segments: N (default: as many as source segments, 2 N_q)
    :param seed: seed of the target segments and of the restarts
    :param n_restarts: GW restarts
    :param max_iter: solver iterations per restart
    :param epsilon: entropic regularisation of GW; 0 for exact GW
    """
    source_pool.check_dataset(source_dataset)
    length = source_pool.segment_length
    source_sampler = WindowSampler(source_dataset, length)
    first, second = source_pool.windows(source_sampler)
    n_pairs = source_pool.n_pairs
    source_windows = Windows(*(np.concatenate([a, b]) for a, b in zip(first, second, strict=True)))
    source_pairs = np.stack([np.arange(n_pairs), np.arange(n_pairs) + n_pairs], axis=1)
    n_target = 2 * n_pairs if n_target_segments is None else n_target_segments
    if n_target < 2:
        raise ValueError(f"n_target_segments must be at least 2, got {n_target}")
    target_sampler = WindowSampler(target_dataset, length)
    rng = np.random.default_rng(seed)
    episodes, starts = target_sampler.sample_starts(n_target, rng, full=True)
    target_windows = target_sampler.windows(episodes, starts)

    started = time.perf_counter()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    cost_source = within_task_distances(segment_features(source_windows))
    cost_target = within_task_distances(segment_features(target_windows))
    alignment = gromov_wasserstein_alignment(
        cost_source, cost_target, n_restarts=n_restarts, seed=seed, max_iter=max_iter, epsilon=epsilon
    )
    peak_alloc = tracemalloc.get_traced_memory()[1]
    if not tracing:
        tracemalloc.stop()
    seconds = time.perf_counter() - started

    target_pairs, _ = matched_target_pairs(alignment.plan, source_pairs)
    labels = transfer_labels(alignment.plan, source_pairs, source_pool.targets, target_pairs)
    supported = ~np.isnan(labels)
    target_pairs, labels = target_pairs[supported], labels[supported]
    if len(labels) == 0:
        raise ValueError("No target pair got a transferred label: draw more source labels or target segments")
    pair_episodes, pair_starts = episodes[target_pairs], starts[target_pairs]
    scores = target_sampler.window_returns(pair_episodes.reshape(-1), pair_starts.reshape(-1)).reshape(-1, 2)
    pool = PreferencePool(
        dataset_id=target_dataset.dataset_id or "dataset",
        mode="window",
        seed=seed,
        segment_length=length,
        horizon=length,
        teacher={"transferred_from": source_pool.dataset_id, "source_seed": source_pool.seed},
        episodes=pair_episodes.astype(np.int64),
        starts=pair_starts.astype(np.int64),
        scores=scores.astype(np.float64),
        targets=labels.astype(np.float32),
        n_transitions=len(target_dataset),
        fingerprint=dataset_fingerprint(target_dataset),
    )
    report = TransferReport(
        n_source_segments=len(cost_source),
        n_target_segments=len(cost_target),
        n_source_labels=n_pairs,
        n_transferred=len(labels),
        gw_dist=alignment.gw_dist,
        gw_dists=alignment.gw_dists,
        seconds=seconds,
        peak_alloc_mib=peak_alloc / 2**20,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return pool, report
