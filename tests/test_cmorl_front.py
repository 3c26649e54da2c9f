"""C-MORL's constraint, step accounting and the honest evaluation of its fronts.

What each test catches (each bug below was applied once to the code and made the named test fail):

- the constraint margin measured from 0 instead of from the reference point
  (``margin = estimate - beta * reference``): ``test_margin_is_measured_from_the_reference_point``
  and ``test_extension_with_negative_returns_keeps_beta_of_the_margin_above_the_reference``
  (objective 0 falls instead of rising);
- CMORL not passing its ``ref_point`` to the extension: ``test_step_accounting_gives_the_released_codes_updates``;
- the barrier's return estimate not refreshed after each update (``_refresh_return_estimate`` a
  no-op), or refreshed with the sign of the change flipped:
  ``test_return_estimate_follows_the_policy_between_evaluations`` (objective 1 falls to about 0);
- ``step_accounting`` ignored (always ``"total"``): ``test_step_accounting_gives_the_released_codes_updates``;
- the final front evaluated on the in-training evaluation seeds (``eval_seed(seed)``), or on fewer
  than five episodes: ``test_final_front_seeds_are_disjoint_from_training_and_selection``;
- ``constrained=False`` still using the barrier: ``test_unconstrained_extension_drops_the_barrier``;
- the concave toy's front bent the other way (a circle centred at the origin):
  ``test_concave_front_is_reached_by_linear_scalarisation_only_at_its_ends``;
- the table's data-driven nadir taken over non-dominated points of the union only:
  ``test_table_reports_hv_at_the_reference_and_at_the_nadir_for_old_and_new_records``;
- an extension child starting from fresh observation statistics instead of a copy of its parent's:
  ``test_extension_starts_from_the_parents_normalisation_statistics``;
- evaluation returns not discounted (in ``evaluate_returns``, or ``eval_gamma`` not passed to it):
  ``test_evaluation_returns_are_discounted_by_eval_gamma``;
- the barrier's return estimate not reset to the measured return after each evaluation:
  ``test_each_evaluation_resets_the_return_estimate``.
"""

import math

import numpy as np
import pytest
import torch as th

from benchmarks import algorithms
from benchmarks.kinds import mo
from benchmarks.suite import RunSpec
from rlkit import CMORL, make_env
from rlkit.cmorl import MOPPO, MOVecNormalize, evaluate_returns
from rlkit.common.mo_metrics import expected_utility, hypervolume, simplex_grid

th.set_num_threads(1)


def _bandit_return(model: MOPPO, offset: float = 0.0) -> np.ndarray:
    action, _ = model.predict(np.ones(1, dtype=np.float32), deterministic=True)
    a = float(np.clip(action[0], -1, 1))
    return np.array([1 + a + offset, 1 - a + offset])


def _bandit_extension(seed: int, offset: float = 0.0, ref_point: list[float] | None = None) -> MOPPO:
    return MOPPO(
        "MlpPolicy",
        make_env("toy/mo-bandit-v0", offset=offset),
        actor_loss="barrier",
        objective=0,
        constraint_reference=[1.0 + offset, 1.0 + offset],
        ref_point=ref_point,
        beta=0.9,
        normalize=False,
        n_steps=128,
        batch_size=64,
        policy_kwargs={"net_arch": [16]},
        seed=seed,
    )


def test_margin_is_measured_from_the_reference_point():
    """margin_j = (G_j + H * surrogate_j - r_j) - beta (G_j^ref - r_j), on a fixed minibatch of the arc task (H = 10)."""
    ref_point, reference, current = np.array([-1.0, -10.0]), np.array([5.0, 5.0]), np.array([5.0, 4.4])
    model = MOPPO(
        "MlpPolicy",
        make_env("toy/mo-arc-v0"),
        actor_loss="barrier",
        objective=0,
        constraint_reference=reference,
        ref_point=ref_point,
        normalize=False,
        n_steps=120,
        batch_size=60,
        n_epochs=1,
        learning_rate=0.0,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    model.current_return = current
    model.learn(120)
    model.current_return = current
    batch = next(model.rollout_buffer.get(60))
    gen = th.Generator().manual_seed(1)
    ratio, advantages = th.exp(0.3 * th.randn(60, generator=gen)), 0.1 * th.randn(60, 2, generator=gen)
    loss = model._barrier_loss(batch, ratio, advantages, clip=0.2)
    centred = advantages[:, 1] - advantages[:, 1].mean()
    surrogate = th.minimum(ratio * centred, th.clamp(ratio, 0.8, 1.2) * centred).mean()
    margin = (current[1] + 10.0 * surrogate - ref_point[1]) - 0.9 * (reference[1] - ref_point[1])
    # 14.4 kept of 15 above -10 (margin about 0.9) is feasible; measured from 0 (4.4 < 4.5) it would be violated
    assert 0.5 < margin.item() < 1.3
    th.testing.assert_close(loss, -th.log(margin) / model.barrier_t)


@pytest.mark.parametrize("seed", [0, 1])
def test_extension_with_negative_returns_keeps_beta_of_the_margin_above_the_reference(seed: int):
    """Returns (a - 2, -a - 2), reference point (-4, -4), start a = 0: the constraint G_1 + 4 >= 0.9 * 2 allows
    a up to 0.2, so objective 0 rises while objective 1 stays above -2.2. Measured from 0 the constraint
    G_1 >= 0.9 * (-2) = -1.8 would demand an improvement of objective 1 and push objective 0 down.
    """
    model = _bandit_extension(seed, offset=-3.0, ref_point=[-4.0, -4.0])
    start = _bandit_return(model, offset=-3.0)
    model.current_return = start
    trace = []
    for _ in range(12):
        model.learn(128, reset_num_timesteps=False)
        model.current_return = _bandit_return(model, offset=-3.0)
        trace.append(model.current_return)
    final = np.mean(trace[-4:], axis=0)
    assert final[0] > start[0] + 0.05, trace
    assert final[1] >= -2.2 - 0.02, trace


@pytest.mark.parametrize("seed", [0, 1])
def test_return_estimate_follows_the_policy_between_evaluations(seed: int):
    """20 extension updates with no evaluation after the first: the barrier's return estimate must follow the
    policy (moved by every update), so objective 1 stays near 0.9 of its start. With the estimate frozen at
    the start, every update sees a feasible margin and objective 1 falls to about 0.
    """
    model = _bandit_extension(seed)
    start = _bandit_return(model)
    model.current_return = start
    trace = []
    for _ in range(20):
        model.learn(128, reset_num_timesteps=False)
        trace.append(_bandit_return(model))
    assert np.mean(trace[-4:], axis=0)[0] > start[0] + 0.05, trace
    assert min(point[1] for point in trace) >= 0.9 * start[1] - 0.03, trace
    assert not np.allclose(model.current_return, start), "the estimate never moved"


def test_unconstrained_extension_drops_the_barrier():
    model = MOPPO(
        "MlpPolicy",
        make_env("toy/mo-arc-v0"),
        actor_loss="objective",
        objective=1,
        normalize=False,
        n_steps=64,
        batch_size=64,
        seed=0,
    )
    model.learn(64)
    losses = model._minibatch_losses(next(model.rollout_buffer.get(64)), clip=0.2, clip_vf=None)
    assert losses["barrier"].item() == 0.0
    built = []
    original = CMORL._new_model

    def spy(self, seed, **kwargs):
        built.append(kwargs.get("actor_loss"))
        return original(self, seed, **kwargs)

    settings = {"weight_step": 1.0, "n_steps": 32, "batch_size": 32, "n_epochs": 1, "eval_episodes": 1, "eval_interval": 1}
    CMORL._new_model = spy
    try:
        for constrained, expected in ((True, "barrier"), (False, "objective")):
            built.clear()
            CMORL("MlpPolicy", "toy/mo-arc-v0", constrained=constrained, n_select=1, update_iter=1, seed=0, **settings).learn(
                192
            )
            assert built[:2] == ["scalarized", "scalarized"] and set(built[2:]) == {expected}, built
    finally:
        CMORL._new_model = original


@pytest.mark.parametrize(
    ("accounting", "init_updates", "rounds"),
    [("per_process", 325, [20, 20, 20, 20, 17]), ("total", 40, [12])],
)
def test_step_accounting_gives_the_released_codes_updates(monkeypatch, accounting, init_updates, rounds):
    """Hopper-2d's schedule (1.5M steps, 6 weights, 8 envs of 512 steps, N_select 5, update_iter 20): per process,
    as the released code counts, 325 initialisation updates per policy and rounds of 20/20/20/20/17 updates per
    (policy, objective); counting every env's steps, 40 and one round of 12. PPO itself is replaced by a stub that
    returns distinct non-dominated evaluations, so the test checks the schedule alone.
    """
    calls: list[tuple[str, int, np.ndarray]] = []
    rng = np.random.default_rng(0)

    def fake_train(self, model, n_updates, interval, callback, progress_bar):
        calls.append((model.actor_loss, n_updates, model.ref_point.copy()))
        self.num_timesteps += n_updates * self._steps_per_update()
        self.env_steps += n_updates * 512 * 8
        angle = rng.uniform(0, np.pi / 2)
        return [np.array([np.cos(angle), np.sin(angle)])]

    monkeypatch.setattr(CMORL, "_train", fake_train)
    model = CMORL(
        "MlpPolicy",
        "toy/mo-arc-v0",
        weight_step=0.2,
        n_envs=8,
        n_steps=512,
        n_select=5,
        update_iter=20,
        ref_point=[-1.0, -2.0],
        step_accounting=accounting,
        seed=0,
    )
    model.learn(1_500_000)
    init = [n for loss, n, _ in calls if loss == "scalarized"]
    extension = [(n, ref) for loss, n, ref in calls if loss == "barrier"]
    assert init == [init_updates] * 6
    per_round = [n for n, _ in extension[::10]]
    assert per_round == rounds and len(extension) == 10 * len(rounds)
    assert all(np.array_equal(ref, [-1.0, -2.0]) for _, ref in extension)
    factor = 8 if accounting == "per_process" else 1
    assert model.env_steps == factor * model.num_timesteps <= factor * 1_500_000
    with pytest.raises(ValueError, match="step_accounting"):
        CMORL("MlpPolicy", "toy/mo-arc-v0", step_accounting="per_env")


def test_final_front_seeds_are_disjoint_from_training_and_selection(monkeypatch):
    """The mo kind's run: every env reset seed of training (envs and in-training evaluations) is recorded, then the
    seeds of the final front's evaluations; they must not overlap, and each point gets at least 5 episodes.
    """
    from rlkit.envs.toy_mo import ArcEnv

    seen: dict[str, list[int]] = {"training": [], "final": []}
    phase = ["training"]
    original_reset = ArcEnv.reset

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            seen[phase[0]].append(seed)
        return original_reset(self, seed=seed, options=options)

    monkeypatch.setattr(ArcEnv, "reset", reset)
    final_calls: list[tuple[int, int]] = []
    original_evaluate = mo.evaluate_returns

    def evaluate(predict, env, n_episodes, gamma=1.0, seed=None):
        phase[0] = "final"
        final_calls.append((seed, n_episodes))
        return original_evaluate(predict, env, n_episodes, gamma, seed)

    monkeypatch.setattr(mo, "evaluate_returns", evaluate)
    hyperparams = {
        "weight_step": 1.0,
        "n_steps": 32,
        "batch_size": 32,
        "n_epochs": 1,
        "eval_episodes": 2,
        "eval_interval": 1,
        "n_select": 1,
        "update_iter": 1,
        "n_envs": 2,
    }
    spec = RunSpec(
        entry=algorithms.get("CMORL"),
        task="toy/mo-arc-v0",
        env="toy/mo-arc-v0",
        seed=3,
        budget=384,
        eval_freq=0,
        eval_episodes=2,
        hyperparams=hyperparams,
        options={"ref_point": [-1.0, -1.0], "nadir": [0.0, 0.0]},
    )
    outcome = mo.train(spec)
    assert final_calls, "the final front was not evaluated"
    final_seeds, training_seeds = set(seen["final"]), set(seen["training"])
    assert {3, 4} <= training_seeds and {10_003, 10_004} <= training_seeds, "training or selection seeds not recorded"
    assert len(seen["final"]) == sum(n for _, n in final_calls)
    assert not final_seeds & training_seeds
    assert all(n >= 5 for _, n in final_calls) and outcome["final_episodes"] >= 5
    assert outcome["final"]["hypervolume_nadir"] == pytest.approx(hypervolume(np.array(outcome["front"]), [0.0, 0.0]))
    assert outcome["step_accounting"] == "total" and outcome["env_steps"] == outcome["final"]["step"]


def test_concave_front_is_reached_by_linear_scalarisation_only_at_its_ends():
    env = make_env("toy/mo-concave-v0")
    front = env.unwrapped.pareto_front(201)
    # a constant action's undiscounted return is on the segment to the front: H * rho * q(s)
    for action, s, rho in (
        ([-1.0, 1.0], 0.0, 1.0),
        ([1.0, 1.0], 1.0, 1.0),
        ([0.0, 1.0], 0.5, 1.0),
        ([0.0, 0.0], 0.5, 0.5),
        ([-0.4, 0.6], 0.3, 0.8),
    ):
        env.reset(seed=0)
        total, done = np.zeros(2), False
        while not done:
            _, reward, terminated, truncated, _ = env.step(np.array(action, dtype=np.float32))
            total, done = total + reward, terminated or truncated
        np.testing.assert_allclose(total, 10 * rho * env.unwrapped.front_point(s), rtol=1e-5)
    np.testing.assert_allclose(front[100], [10 * (2 - math.sqrt(2.5))] * 2, rtol=1e-6)
    # concave: every linear preference is served best by an end of the front, strictly so off the diagonal
    for w in simplex_grid(2, 0.05):
        utilities = front @ w
        assert np.argmax(utilities) in (0, len(front) - 1) and utilities[1:-1].max() < utilities.max()
    ends = front[[0, -1]]
    assert hypervolume(ends, [0.0, 0.0]) == 0.0 and hypervolume(front, [0.0, 0.0]) > 35
    assert expected_utility(front, step=0.01) == pytest.approx(expected_utility(ends, step=0.01))
    arc = make_env("toy/mo-arc-v0").unwrapped.pareto_front(201)
    assert hypervolume(arc, [0.0, 0.0]) == pytest.approx(25 * math.pi, rel=5e-3)


def _record(algo: str, seed: int, front: list[list[float]], new: bool) -> dict:
    front_array = np.array(front)
    final = {
        "step": 100,
        "return_mean": hypervolume(front_array, [-1, -1]),
        "hypervolume": hypervolume(front_array, [-1, -1]),
        "expected_utility": expected_utility(front_array, step=0.5),
        "sparsity": 0.0,
        "front_size": len(front),
    }
    record = {
        "kind": "mo",
        "status": "ok",
        "task": "toy/mo-arc-v0",
        "algo": algo,
        "seed": seed,
        "front": front,
        "final": final,
        "eval_episodes": 2,
        "options": {"ref_point": [-1.0, -1.0], "eval_gamma": 0.99},
        "hyperparams": {},
    }
    if new:
        record.update(final_episodes=5, step_accounting="per_process")
        final["hypervolume_nadir"] = float("nan")
    return record


def test_table_reports_hv_at_the_reference_and_at_the_nadir_for_old_and_new_records():
    records = [_record("A", 0, [[3.0, 1.0], [1.0, 2.0]], new=False), _record("B", 0, [[2.0, 2.0]], new=True)]
    lines = mo.table(records)
    text = "\n".join(lines)
    assert "discounted" in text and "| γ |" in text
    rows = {line.split(" | ")[4]: line for line in lines if line.startswith("| toy/")}
    # the data-driven nadir is the minimum over every front point of every run, (1, 1): not (2, 1) of the union's front
    assert "(1, 1) *data*" in rows["A"]
    assert rows["A"].split(" | ")[8] == f"{hypervolume([[3.0, 1.0], [1.0, 2.0]], [1, 1]):.2f} ± 0.00"
    assert rows["B"].split(" | ")[8] == "1.00 ± 0.00"
    assert rows["A"].split(" | ")[5] == "total" and rows["B"].split(" | ")[5] == "per_process"
    declared = [{**r, "options": {**r["options"], "nadir": [0.0, 0.0]}} for r in records]
    row_a = next(line for line in mo.table(declared) if " | A | " in line)
    assert "*data*" not in row_a and row_a.split(" | ")[8] == f"{hypervolume([[3.0, 1.0], [1.0, 2.0]], [0, 0]):.2f} ± 0.00"


def _turning(obs: np.ndarray) -> np.ndarray:
    """Arc-task controller whose direction turns with the step (observation ``t / horizon``)."""
    angle = 0.5 * np.pi * float(obs[0])
    return np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)


def _turning_return(gamma: float) -> np.ndarray:
    """Hand-computed return of :func:`_turning` over the arc task's 10 steps: sum_t gamma^t (cos, sin)(pi t / 20)."""
    angles = 0.5 * np.pi * np.arange(10) / 10
    return np.sum(gamma ** np.arange(10)[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1), axis=0)


def test_evaluation_returns_are_discounted_by_eval_gamma():
    """``evaluate_returns`` and C-MORL's in-training evaluation (``eval_gamma``) both discount the reward vector."""
    env = make_env("toy/mo-arc-v0")
    np.testing.assert_allclose(evaluate_returns(_turning, env, 2, gamma=0.9, seed=0), _turning_return(0.9), rtol=1e-5)
    np.testing.assert_allclose(evaluate_returns(_turning, env, 1, gamma=1.0, seed=0), _turning_return(1.0), rtol=1e-5)
    cmorl = CMORL("MlpPolicy", "toy/mo-arc-v0", eval_gamma=0.9, eval_episodes=2, n_steps=32, batch_size=32, seed=0)
    model = cmorl._new_model(0, weights=np.array([0.5, 0.5]), actor_loss="scalarized")
    model.predict = lambda obs, deterministic=True: (_turning(obs), None)  # fresh statistics: obs / sqrt(1 + 1e-8)
    np.testing.assert_allclose(cmorl._evaluate(model), _turning_return(0.9), rtol=1e-5)
    assert _turning_return(0.9)[0] < 0.8 * _turning_return(1.0)[0]  # the discount is visible


def test_each_evaluation_resets_the_return_estimate():
    """``_train`` evaluates every ``interval`` updates and sets the barrier's ``current_return`` to the measured
    return, so the next updates start from it (the estimate moved by the updates since is discarded).
    """
    cmorl = CMORL("MlpPolicy", "toy/mo-arc-v0", n_steps=32, batch_size=32, n_epochs=1, seed=0)
    model = cmorl._new_model(0, weights=np.array([0.5, 0.5]), actor_loss="barrier", constraint_reference=[1.0, 2.0])
    measured = [np.array([3.0, -1.0]), np.array([4.0, -2.0]), np.array([5.0, -3.0])]
    queue = list(measured)
    cmorl._evaluate = lambda _: queue.pop(0)
    seen = []
    original_learn = model.learn

    def learn(*args, **kwargs):
        seen.append(np.array(model.current_return, dtype=float))
        return original_learn(*args, **kwargs)

    model.learn = learn
    evaluations = cmorl._train(model, 3, 1, None, False)
    assert len(seen) == 3 and not queue
    np.testing.assert_array_equal(seen[0], [1.0, 2.0])
    np.testing.assert_array_equal(seen[1], measured[0])
    np.testing.assert_array_equal(seen[2], measured[1])
    np.testing.assert_array_equal(model.current_return, measured[2])
    for got, expected in zip(evaluations, measured, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_extension_starts_from_the_parents_normalisation_statistics(monkeypatch):
    """Every extension child starts with a copy of its parent's observation (and return) statistics: the stub of
    ``_train`` gives each initialisation policy distinct statistics, then records the child's at its start and
    changes them, which must not reach the parent in the archive.
    """
    parents: dict[tuple, tuple] = {}
    children: list[tuple] = []

    def fake_train(self, model, n_updates, interval, callback, progress_bar):
        self.num_timesteps += n_updates * self._steps_per_update()
        venv = model.get_vec_normalize_env()
        assert isinstance(venv, MOVecNormalize)
        if model.actor_loss == "scalarized":
            k = len(parents) + 1.0
            venv.obs_rms.mean, venv.obs_rms.var, venv.obs_rms.count = np.array([k, -k]), np.array([k + 1, 2 * k]), 50 * k
            venv.ret_rms.var = np.array([3 * k, 0.5 * k])
            returns = np.array([k, 3.0 - k])
            parents[tuple(returns)] = (venv.obs_rms.mean.copy(), venv.obs_rms.var.copy(), 50 * k, venv.ret_rms.var.copy())
            return [returns]
        stats = (venv.obs_rms.mean.copy(), venv.obs_rms.var.copy(), venv.obs_rms.count, venv.ret_rms.var.copy())
        children.append((tuple(model.constraint_reference), model.objective, stats))
        venv.obs_rms.mean += 100.0
        venv.ret_rms.var += 100.0
        return [np.array([0.0, 0.0])]

    monkeypatch.setattr(CMORL, "_train", fake_train)
    model = CMORL("MlpPolicy", "toy/mo-arc-v0", weight_step=1.0, n_steps=32, batch_size=32, n_select=2, update_iter=1, seed=0)
    model.learn(384)
    assert sorted((ref, objective) for ref, objective, _ in children) == [
        ((1.0, 2.0), 0),
        ((1.0, 2.0), 1),
        ((2.0, 1.0), 0),
        ((2.0, 1.0), 1),
    ]
    for ref, _, (mean, var, count, ret_var) in children:
        parent_mean, parent_var, parent_count, parent_ret_var = parents[ref]
        np.testing.assert_array_equal(mean, parent_mean)
        np.testing.assert_array_equal(var, parent_var)
        assert count == parent_count
        np.testing.assert_array_equal(ret_var, parent_ret_var)
    for member in model.archive.members:
        mean, var, count, ret_var = parents[tuple(member.returns)]
        np.testing.assert_array_equal(member.obs_rms.mean, mean)
        np.testing.assert_array_equal(member.ret_rms.var, ret_var)
