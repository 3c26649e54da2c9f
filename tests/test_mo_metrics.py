"""Multi-objective metrics: hand-checkable fronts, an exact hypervolume reference and pymoo on random fronts."""

from itertools import combinations

import numpy as np
import pytest

from rlkit.common.mo_metrics import crowding_distance, expected_utility, hypervolume, pareto_mask, simplex_grid, sparsity


def test_hand_checkable_front_hv_eu_sp():
    front = np.array([[2.0, 1.0], [1.0, 2.0]])
    assert hypervolume(front, [0.0, 0.0]) == pytest.approx(3.0)
    assert expected_utility(front, step=0.5) == pytest.approx((2 + 1.5 + 2) / 3)
    assert sparsity(front) == pytest.approx(2.0)


def test_crowding_distance_hand_example_and_equal_values_guard():
    np.testing.assert_allclose(crowding_distance([[0, 2], [1, 1], [2, 0]]), [np.inf, 2.0, np.inf])
    # the second objective is constant: it is skipped instead of dividing by zero
    np.testing.assert_allclose(crowding_distance([[0, 1], [1, 1], [3, 1]]), [np.inf, 1.0, np.inf])
    same = crowding_distance([[1, 1], [1, 1], [1, 1]])
    assert np.all(np.isfinite(same)) and np.all(same == 0)


def test_hypervolume_ignores_points_not_above_the_reference_and_empty_sets():
    assert hypervolume(np.zeros((0, 2)), [0, 0]) == 0.0
    assert hypervolume([[-1.0, 5.0]], [0, 0]) == 0.0
    assert hypervolume([[2.0, 1.0], [1.0, 2.0], [-1.0, 5.0]], [0, 0]) == pytest.approx(3.0)
    assert hypervolume([[2.0, 1.0]], [-1.0, -1.0]) == pytest.approx(6.0)


def _exact_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Inclusion-exclusion over the boxes [ref, p]: exact for any dimension, exponential in |points|."""
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in combinations(points, size):
            corner = np.min(subset, axis=0)
            total += (-1) ** (size + 1) * np.prod(np.clip(corner - ref, 0, None))
    return float(total)


@pytest.mark.parametrize("n_objectives", [2, 3])
def test_hypervolume_matches_exact_inclusion_exclusion_on_random_fronts(n_objectives):
    rng = np.random.default_rng(n_objectives)
    for _ in range(20):
        points = rng.uniform(-1, 5, size=(rng.integers(1, 8), n_objectives))
        ref = rng.uniform(-2, 0, size=n_objectives)
        assert hypervolume(points, ref) == pytest.approx(_exact_hv(points, ref), rel=1e-9, abs=1e-9)


def test_simplex_grids_of_the_paper():
    assert len(simplex_grid(2, 0.2)) == 6
    assert len(simplex_grid(2, 0.01)) == 101
    assert len(simplex_grid(3, 0.1)) == 66
    expected = [[0.2, 0.2, 0.6], [0.2, 0.5, 0.3], [0.2, 0.8, 0.0], [0.5, 0.2, 0.3], [0.5, 0.5, 0.0], [0.8, 0.2, 0.0]]
    np.testing.assert_allclose(simplex_grid(3, 0.3, 0.2, 0.8), expected, atol=1e-9)
    np.testing.assert_allclose(simplex_grid(9, 1.0), np.eye(9)[::-1])
    grid = simplex_grid(3, 0.1)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)


def test_expected_utility_default_grid_and_sparsity_of_a_single_point():
    front = np.array([[3.0, 0.0], [0.0, 3.0]])
    # max(3w, 3(1-w)) averaged over w in {0, .01, ..., 1}
    w = np.linspace(0, 1, 101)
    assert expected_utility(front) == pytest.approx(np.mean(np.maximum(3 * w, 3 * (1 - w))))
    assert sparsity([[1.0, 2.0]]) == 0.0
    assert np.isnan(expected_utility(np.zeros((0, 2))))


def test_sparsity_sorts_each_objective_before_taking_the_gaps():
    # in the given order the first objective's gaps are 3 and -2; sorted (0, 1, 3) they are 1 and 2
    points = [[0.0, 3.0], [3.0, 0.0], [1.0, 1.0]]
    assert sparsity(points) == pytest.approx((1 + 4 + 1 + 4) / 2)


def test_hypervolume_rejects_a_reference_point_of_another_dimension():
    with pytest.raises(ValueError, match="2 objectives but ref_point has 3"):
        hypervolume([[1.0, 2.0]], [0.0, 0.0, 0.0])


def test_pareto_mask_drops_dominated_points_and_duplicates():
    points = np.array([[1.0, 1.0], [2.0, 0.5], [0.5, 0.5], [1.0, 1.0], [0.0, 3.0]])
    np.testing.assert_array_equal(pareto_mask(points), [True, True, False, False, True])


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
def test_hypervolume_matches_pymoo_on_random_fronts(n_objectives):
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(10 + n_objectives)
    for _ in range(20):
        points = rng.uniform(-1, 5, size=(rng.integers(1, 30), n_objectives))
        ref = rng.uniform(-2, 0, size=n_objectives)
        # pymoo minimises: negate both the points and the reference point
        expected = HV(ref_point=-ref)(-points)
        assert hypervolume(points, ref) == pytest.approx(expected, rel=1e-9, abs=1e-9)
