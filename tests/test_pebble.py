"""Tests of PEBBLE and PARL: hypergradient, phases of the loop, PARL's reward step, learning, SB3 contract."""

from __future__ import annotations

import copy
import importlib
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3 import SAC

from rlkit import PARL, PEBBLE
from rlkit.common.evaluation import evaluate
from rlkit.common.preference import Segments
from rlkit.envs.toy import PointReachEnv
from rlkit.parl import conjugate_gradient, hypergradient

th.set_num_threads(1)

ALGOS = (PEBBLE, PARL)
# Phases compressed so that every part of the loop runs within a few hundred steps
TINY = dict(
    learning_starts=50,
    unsup_steps=50,
    num_interact=100,
    max_feedback=40,
    reward_batch=10,
    segment_length=10,
    reward_update=5,
    reward_net_arch=[16],
    reset_update=5,
    batch_size=32,
    policy_kwargs=dict(net_arch=[16, 16]),
)


# --------------------------------------------------------------------------- hypergradient on a tabular MDP


class TabularProblem:
    """A random MDP, a linear reward r_nu = phi . nu, an entropy-regularised softmax policy (last logit fixed at 0).

    The upper objective is the expected Bradley-Terry log-likelihood of a noisy (beta = 1)
    teacher's labels on pairs of state-actions drawn from the policy's discounted occupancy.
    """

    def __init__(self, n_states: int = 4, n_actions: int = 3, n_features: int = 3, gamma: float = 0.8, alpha: float = 0.5):
        gen = th.Generator().manual_seed(0)
        rand = lambda *shape: th.rand(*shape, generator=gen, dtype=th.float64)  # noqa: E731
        self.transitions = rand(n_states, n_actions, n_states)
        self.transitions /= self.transitions.sum(-1, keepdim=True)
        self.features = 2 * rand(n_states, n_actions, n_features) - 1
        self.true_reward = 2 * rand(n_states, n_actions) - 1
        self.initial = th.full((n_states,), 1.0 / n_states, dtype=th.float64)
        self.gamma, self.alpha = gamma, alpha

    def policy(self, theta: th.Tensor) -> th.Tensor:
        return th.softmax(th.cat([theta, th.zeros(len(theta), 1, dtype=theta.dtype)], dim=1), dim=1)

    def _discounted_visits(self, pi: th.Tensor) -> th.Tensor:
        p_pi = th.einsum("sa,sat->st", pi, self.transitions)
        eye = th.eye(len(pi), dtype=pi.dtype)
        return th.linalg.solve((eye - self.gamma * p_pi).T, self.initial)

    def lower(self, nu: th.Tensor, theta: th.Tensor) -> th.Tensor:
        """V(nu, theta) = E_{s0}[sum_t gamma^t (r_nu - alpha log pi)]."""
        pi = self.policy(theta)
        reward = self.features @ nu
        return self._discounted_visits(pi) @ (pi * (reward - self.alpha * th.log(pi))).sum(1)

    def upper(self, nu: th.Tensor, theta: th.Tensor) -> th.Tensor:
        pi = self.policy(theta)
        occupancy = ((1 - self.gamma) * self._discounted_visits(pi)[:, None] * pi).flatten()
        reward = (self.features @ nu).flatten()
        true = self.true_reward.flatten()
        p_true = th.sigmoid(true[None, :] - true[:, None])  # P(y preferred to x)
        delta = reward[None, :] - reward[:, None]
        loglik = p_true * th.nn.functional.logsigmoid(delta) + (1 - p_true) * th.nn.functional.logsigmoid(-delta)
        return occupancy @ loglik @ occupancy

    def best_theta(self, nu: th.Tensor) -> th.Tensor:
        """theta*(nu) by soft value iteration."""
        reward = self.features @ nu
        value = th.zeros(len(reward), dtype=th.float64)
        for _ in range(400):
            q = reward + self.gamma * self.transitions @ value
            value = self.alpha * th.logsumexp(q / self.alpha, dim=1)
        return (q[:, :-1] - q[:, -1:]) / self.alpha

    def objective(self, nu: th.Tensor) -> float:
        return float(self.upper(nu, self.best_theta(nu)))


def test_hypergradient_matches_finite_differences_on_a_tabular_mdp():
    problem = TabularProblem()
    nu = th.tensor([0.3, -0.5, 0.8], dtype=th.float64, requires_grad=True)
    theta = problem.best_theta(nu.detach()).requires_grad_(True)
    lower_grad = th.autograd.grad(problem.lower(nu, theta), theta)[0]
    assert lower_grad.abs().max() < 1e-9  # theta is the lower maximiser
    result = hypergradient(problem.upper(nu, theta), problem.lower(nu, theta), [theta], [nu], damping=0.0, cg_iters=50)
    total = result.direct[0] + result.correction[0]
    eps = 1e-5
    finite = th.stack(
        [
            th.tensor((problem.objective(nu.detach() + eps * e) - problem.objective(nu.detach() - eps * e)) / (2 * eps))
            for e in th.eye(3, dtype=th.float64)
        ]
    )
    assert float((total - finite).norm() / finite.norm()) < 1e-3
    # the correction matters: the first-order (PEBBLE) term alone is far off
    assert float((result.direct[0] - finite).norm() / finite.norm()) > 0.05
    assert result.residual < 1e-6


class MisspecifiedBandit:
    """Six arms, a linear reward r_nu = x . nu on two features (misspecified: six true rewards), the
    entropy-regularised softmax policy theta*(nu) = (r_nu - r_nu[last]) / alpha in closed form (last logit 0), and a
    noisy teacher (beta = 3) that compares two arms drawn from the policy. The instance (features and true rewards
    from ``default_rng(5210)``) was chosen, among random ones, for a first-order fixed point whose greedy arm is not
    the best: the hypergradient does not help on every problem (over 300 random instances of this shape, the
    first-order fixed point was misaligned on 111, and the full hypergradient's stationary point aligned on 5 of them).
    """

    alpha, beta = 0.5, 3.0

    def __init__(self) -> None:
        gen = np.random.default_rng(5210)
        self.features = th.tensor(gen.uniform(-1, 1, (6, 2)))
        self.true_reward = gen.uniform(-1, 1, 6)
        self.best = int(np.argmax(self.true_reward))

    def best_theta(self, nu: th.Tensor) -> th.Tensor:
        reward = self.features @ nu
        return ((reward[:-1] - reward[-1]) / self.alpha).detach()

    def policy(self, theta: th.Tensor) -> th.Tensor:
        return th.softmax(th.cat([theta, th.zeros(1, dtype=theta.dtype)]), dim=0)

    def lower(self, nu: th.Tensor, theta: th.Tensor) -> th.Tensor:
        pi = self.policy(theta)
        return pi @ (self.features @ nu - self.alpha * th.log(pi))

    def expected_upper(self, nu: th.Tensor, theta: th.Tensor) -> th.Tensor:
        """G exactly: the teacher's expected log-likelihood over pairs of arms drawn from the policy."""
        pi = self.policy(theta)
        true = th.tensor(self.true_reward)
        p_true = th.sigmoid(self.beta * (true[None, :] - true[:, None]))  # P(second arm preferred)
        reward = self.features @ nu
        delta = reward[None, :] - reward[:, None]
        loglik = p_true * F.logsigmoid(delta) + (1 - p_true) * F.logsigmoid(-delta)
        return pi @ loglik @ pi

    def sampled_upper(self, nu: th.Tensor, theta: th.Tensor, n: int, rng: np.random.Generator) -> th.Tensor:
        """U on ``n`` queried pairs drawn from the policy, plus the score-function term of grad_theta G (PARL's)."""
        pi = self.policy(theta)
        first, second = (th.as_tensor(rng.choice(6, size=n, p=pi.detach().numpy())) for _ in range(2))
        prob = 1 / (1 + np.exp(-self.beta * (self.true_reward[second] - self.true_reward[first])))
        labels = th.as_tensor((rng.random(n) < prob).astype(np.float64))
        reward = self.features @ nu
        delta = reward[second] - reward[first]
        loglik = labels * F.logsigmoid(delta) + (1 - labels) * F.logsigmoid(-delta)
        score = th.log(pi[first]) + th.log(pi[second])
        return loglik.mean() + ((loglik - loglik.mean()).detach() * score).mean()

    def greedy_is_best(self, nu: th.Tensor) -> bool:
        pi = self.policy(self.best_theta(nu))
        return bool(pi[self.best] > th.cat([pi[: self.best], pi[self.best + 1 :]]).max())

    def step(self, nu: th.Tensor, full: bool, n: int = 0, rng: np.random.Generator | None = None) -> th.Tensor:
        """One upper step nu + lr * (direct [+ correction]) at theta*(nu), lr = 1 (exact G when ``n`` is 0)."""
        nu = nu.detach().requires_grad_(True)
        theta = self.best_theta(nu).requires_grad_(True)
        upper = self.expected_upper(nu, theta) if rng is None else self.sampled_upper(nu, theta, n, rng)
        terms = hypergradient(upper, self.lower(nu, theta), [theta], [nu], damping=0.0, cg_iters=10)
        return (nu + terms.direct[0] + (terms.correction[0] if full else 0.0)).detach()


def _queries_to_stay_aligned(bandit: MisspecifiedBandit, full: bool, seed: int, rounds: int = 100, n: int = 10) -> int:
    """Queries after which the greedy arm of theta*(nu) stays the best arm to the end (rounds * n if never)."""
    rng = np.random.default_rng(seed)
    nu = th.zeros(2, dtype=th.float64)
    aligned = []
    for _ in range(rounds):
        aligned.append(bandit.greedy_is_best(nu))
        nu = bandit.step(nu, full, n, rng)
    misaligned = [t for t, ok in enumerate(aligned) if not ok]
    return (misaligned[-1] + 1) * n if misaligned else 0


def test_full_hypergradient_aligns_a_misspecified_bandit_where_the_first_order_update_does_not():
    """Exact: iterating the expected first-order update reaches a fixed point whose greedy arm is not the best, the
    full hypergradient (direct + correction) a stationary point of G whose greedy arm is, with a higher true return.
    Sampled: 10 queries per round from the induced policy, 20 seeds (100-119); the full hypergradient stays on the
    best arm after fewer queries. Measured: first-order limit return 0.15 (greedy arm 2), full 0.56 (arm 4, the
    best); queries until aligned for good, mean 792 first-order against 484 full, fewer on 16 of 20 seeds, more on none.
    """
    bandit = MisspecifiedBandit()
    limits = {}
    for full in (False, True):
        nu = th.zeros(2, dtype=th.float64)
        for _ in range(200):
            nu = bandit.step(nu, full)
        pi = bandit.policy(bandit.best_theta(nu))
        limits[full] = (bandit.greedy_is_best(nu), float(pi @ th.tensor(bandit.true_reward)))
    assert limits[False][0] is False and limits[True][0] is True
    assert limits[True][1] > limits[False][1] + 0.2

    first_order = np.array([_queries_to_stay_aligned(bandit, False, seed) for seed in range(100, 120)])
    full = np.array([_queries_to_stay_aligned(bandit, True, seed) for seed in range(100, 120)])
    assert full.mean() < 0.75 * first_order.mean(), (first_order, full)
    assert (full < first_order).sum() >= 10 and (full > first_order).sum() <= 2, (first_order, full)


def test_conjugate_gradient_solves_a_positive_definite_system():
    gen = th.Generator().manual_seed(0)
    m = th.randn(6, 6, generator=gen, dtype=th.float64)
    a = m @ m.T + 0.5 * th.eye(6, dtype=th.float64)
    b = th.randn(6, generator=gen, dtype=th.float64)
    (x,) = conjugate_gradient(lambda v: [a @ v[0]], [b], n_iters=20)
    th.testing.assert_close(x, th.linalg.solve(a, b))


# --------------------------------------------------------------------------- the loop


def _make(algo: type, seed: int = 0, env: gym.Env | None = None, **kwargs: Any) -> PEBBLE:
    settings = {**TINY, **kwargs}
    return algo("MlpPolicy", env or PointReachEnv(), seed=seed, device="cpu", **settings)


@pytest.mark.parametrize("algo", ALGOS)
def test_phases_feedback_budget_and_relabelling(algo):
    model = _make(algo, num_interact=60)
    model.learn(99)  # seed and unsupervised steps only: no query, intrinsic reward, zeros stored
    assert model.total_feedback == 0 and not model.reward_learned
    assert np.all(model.replay_buffer.rewards[:99] == 0)
    samples = model.replay_buffer.sample(8)
    assert th.all(samples.rewards == 0)
    critic_before = [p.clone() for p in model.critic.parameters()]
    model.learn(400, reset_num_timesteps=False)
    assert model.reward_learned
    assert model.total_feedback == model.max_feedback == 40  # the budget is used and never exceeded
    assert model.progress_info() == {"queries": 40.0, "labelled": 40.0}
    assert len(model.preference_data) == 40
    size = model.replay_buffer.pos
    expected = model.learned_reward(model.replay_buffer.observations[:size, 0], model.replay_buffer.actions[:size, 0])
    np.testing.assert_allclose(model.replay_buffer.rewards[:size, 0], expected, rtol=1e-5, atol=1e-6)
    assert all(not th.equal(a, b) for a, b in zip(critic_before, model.critic.parameters(), strict=True))


@pytest.mark.parametrize("max_feedback", [25, 4])
def test_last_query_batch_is_trimmed_to_max_feedback(max_feedback):
    """Rounds of 10 queries under a budget of 25 ask 10, 10, then 5; a budget of 4 asks 4 in the first round."""
    model = _make(PEBBLE, num_interact=60, max_feedback=max_feedback, query_scheme="entropy")
    rounds = []
    original = model._ask_teacher

    def recording(scheme: str) -> Any:
        before = model.total_feedback
        result = original(scheme)
        rounds.append(model.total_feedback - before)
        return result

    model._ask_teacher = recording  # type: ignore[method-assign]
    model.learn(500)
    assert rounds == ([10, 10, 5] if max_feedback == 25 else [4])
    assert model.total_feedback == len(model.preference_data) == max_feedback


def test_intrinsic_reward_is_the_knn_distance_over_its_std():
    model = _make(PEBBLE, topk=2)
    model.learn(60)
    samples = model.replay_buffer.sample(16)
    reward = model._intrinsic_reward(samples).squeeze(1)
    states = th.as_tensor(model.replay_buffer.observations[: model.replay_buffer.pos, 0])
    distances = th.cdist(samples.observations, states)
    third = distances.sort(dim=1).values[:, 2]  # itself, then its 2 nearest neighbours
    std = float(np.sqrt(model.state_entropy_stats.var))
    th.testing.assert_close(reward, third / std)


def _flat(module: th.nn.Module) -> th.Tensor:
    return th.cat([param.detach().flatten() for param in module.parameters()])


def test_parl_reward_step_is_the_fit_plus_the_correction_at_a_ratio_of_the_fit():
    """PARL's upper step is PEBBLE's fit plus a step along the hypergradient correction taken at the pre-fit reward,
    its norm ``correction_ratio`` times the fit's. The fit is replayed without the correction from the same reward
    model, optimizer and random state; the difference must be exactly that step. Removing or zeroing the correction,
    flipping its sign or taking it at the fitted reward fails the test.
    """
    model = _make(PARL, correction_ratio=0.7)
    model.learn(300)
    assert model.reward_learned
    segments0, segments1, targets = model._ask_teacher("uniform")
    assert len(targets) > 1
    keys = ("preference_rng", "hypergradient_rng", "heldout_rng")
    saved = [copy.deepcopy(model.reward_model.state_dict()), copy.deepcopy(model.reward_model.optimizer.state_dict())]
    rngs = {key: copy.deepcopy(getattr(model, key)) for key in keys}

    def restore() -> None:
        model.reward_model.load_state_dict(saved[0])
        model.reward_model.optimizer.load_state_dict(saved[1])
        for key in keys:
            setattr(model, key, copy.deepcopy(rngs[key]))

    before = _flat(model.reward_model)
    model._fit_reward(segments0, segments1, targets)
    corrected = _flat(model.reward_model)
    logged = dict(model.logger.name_to_value)

    restore()
    terms = model.hypergradient_terms(segments0, segments1, targets, *model.sample_lower_batch())
    correction = th.cat([c.flatten() for c in terms.correction])
    restore()
    model.use_correction = False
    model._fit_reward(segments0, segments1, targets)
    fitted = _flat(model.reward_model)

    fit_step = fitted - before
    assert correction.norm() > 0
    expected = fitted + 0.7 * fit_step.norm() * correction / correction.norm()
    th.testing.assert_close(corrected, expected, atol=1e-6, rtol=1e-5)
    assert logged["parl/correction_to_fit"] == pytest.approx(0.7, rel=1e-5)
    assert (corrected - fitted).norm().item() == pytest.approx(0.7 * fit_step.norm().item(), rel=1e-4)
    assert {"parl/heldout_accuracy", "parl/heldout_accuracy_change", "parl/damping", "parl/curvature_scale"} <= set(logged)


def _reference_lower_gradient(
    model: PARL, reward: th.nn.Module, batch: Any, noise: th.Tensor, next_noise: th.Tensor
) -> th.Tensor:
    """grad_theta V written differently: SGD (torch.optim) steps a copy of the critic on targets of ``reward``,
    then SAC's actor objective is differentiated with tanh-Gaussian log-densities from ``torch.distributions``."""
    ent_coef = float(th.exp(model.log_ent_coef.detach()))

    def squashed(states: th.Tensor, eps: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        mean, log_std, _ = model.actor.get_action_dist_params(states)
        base = th.distributions.Normal(mean, log_std.exp())
        dist = th.distributions.TransformedDistribution(base, [th.distributions.TanhTransform()])
        pre = mean + log_std.exp() * eps
        return th.tanh(pre), base.log_prob(pre).sum(-1) - dist.transforms[0].log_abs_det_jacobian(pre, None).sum(-1)

    critic = copy.deepcopy(model.critic)
    with th.no_grad():
        next_actions, next_log_prob = squashed(batch.next_observations, next_noise)
        next_q = th.min(*model.critic_target(batch.next_observations, next_actions)).reshape(-1)
        y = reward(batch.observations, batch.actions) + model.gamma * (1 - batch.dones.reshape(-1)) * (
            next_q - ent_coef * next_log_prob
        )
    sgd = th.optim.SGD(critic.parameters(), lr=model.critic.optimizer.param_groups[0]["lr"])
    loss = sum(0.5 * ((q.reshape(-1) - y) ** 2).mean() for q in critic(batch.observations, batch.actions))
    sgd.zero_grad()
    loss.backward()
    sgd.step()
    actions, log_prob = squashed(batch.observations, noise)
    value = (th.min(*critic(batch.observations, actions)).reshape(-1) - ent_coef * log_prob).mean()
    grads = th.autograd.grad(value, list(model.actor.parameters()), create_graph=True)
    return th.cat([g.flatten() for g in grads])


def test_parl_correction_is_the_implicit_hypergradient_of_the_unrolled_actor_objective():
    """The correction equals M^T (-H + lambda I)^-1 grad_theta G built from a reference written differently: H by
    differentiating the reference grad_theta V, M by central differences of it in nu (the critic stepped by
    torch.optim.SGD on the perturbed reward), lambda = damping times max |eig H| (eigvalsh). Tiny networks, a large
    critic lr so that the unrolled step matters (float32: SB3's policies cast observations to it). Taking H from the
    un-stepped critic, a fixed damping, a mixed term that does not reach nu, or a sign flip fails the test.
    """
    model = _make(PARL, policy_kwargs=dict(net_arch=[4]), reward_net_arch=[4], reward_ensemble_size=2)
    model.learn(300)
    model.critic.optimizer.param_groups[0]["lr"] = 1.0  # the unrolled step's eta
    model.damping, model.cg_iters, model.power_iters, model.hypergradient_batch = 1.5, 400, 400, 16
    segments0, segments1, targets = model._ask_teacher("uniform")
    batch, noise, next_noise = model.sample_lower_batch()
    terms = model.hypergradient_terms(segments0, segments1, targets, batch, noise, next_noise)

    theta = list(model.actor.parameters())
    upper = model.upper_objective(segments0, segments1, targets)
    g = th.cat([x.flatten() for x in th.autograd.grad(upper, theta, allow_unused=False)])
    reward = model.reward_model.reward
    lower_grad = _reference_lower_gradient(model, reward, batch, noise, next_noise)
    hessian = th.stack(
        [
            th.cat([x.flatten() for x in th.autograd.grad(lower_grad[i], theta, retain_graph=True)])
            for i in range(len(lower_grad))
        ]
    )
    hessian = 0.5 * (hessian + hessian.T)
    lam = 1.5 * th.linalg.eigvalsh(hessian).abs().max()
    v = th.linalg.solve(-hessian.double() + lam.double() * th.eye(len(g), dtype=th.float64), g.detach().double()).float()

    nu = list(model.reward_model.parameters())
    flat_nu = th.cat([p.detach().flatten() for p in nu])
    reference = th.zeros_like(flat_nu)
    eps = 3e-3
    for j in range(len(flat_nu)):
        values: list[th.Tensor] = []
        for sign in (1.0, -1.0):
            shifted = flat_nu.clone()
            shifted[j] += sign * eps
            th.nn.utils.vector_to_parameters(shifted, nu)
            values.append(_reference_lower_gradient(model, reward, batch, noise, next_noise).detach().double())
        reference[j] = float((values[0] - values[1]) @ v.double()) / (2 * eps)
    th.nn.utils.vector_to_parameters(flat_nu, nu)

    correction = th.cat([c.flatten() for c in terms.correction])
    assert terms.damping == pytest.approx(float(lam), rel=1e-3)
    assert terms.residual < 1e-3
    assert reference.norm() > 1e-4
    assert float((correction - reference).norm() / reference.norm()) < 3e-2  # central differences in float32: ~1%


#: the SAC settings of the toy learning test, shared by the oracle and the preference learners
TOY_SAC = dict(
    learning_starts=200, batch_size=64, learning_rate=1e-3, policy_kwargs=dict(net_arch=[64, 64]), seed=0, device="cpu"
)


@pytest.fixture(scope="module")
def oracle_return() -> float:
    """SAC on the true reward, with the same settings and steps: the oracle of the learning test."""
    oracle = SAC("MlpPolicy", PointReachEnv(), **TOY_SAC).learn(3000)
    return evaluate(oracle, PointReachEnv(), 10, deterministic=True, seed=100).return_mean


@pytest.mark.parametrize("algo", ALGOS)
def test_learns_toy_reach_from_oracle_preferences(algo, oracle_return):
    """300 scripted-oracle queries take the agent most of the way from untrained to the SAC oracle, on average
    over seeds 0-2 (one seed's figure moves with the machine's float arithmetic: PARL's seed 0 gave -26 on one
    machine and -47 on another).

    Measured (untrained -69/-64/-65, oracle about -9): PEBBLE -22/-17/-28 (mean 77% of the way), PARL
    -46/-22/-31 (58%).
    """
    shares = []
    for seed in (0, 1, 2):
        model = algo(
            "MlpPolicy",
            PointReachEnv(),
            unsup_steps=300,
            num_interact=500,
            max_feedback=300,
            reward_batch=50,
            segment_length=20,
            reward_update=30,
            reward_net_arch=[64, 64],
            **{**TOY_SAC, "seed": seed},
        )
        untrained = evaluate(model, PointReachEnv(), 10, deterministic=True, seed=100).return_mean
        model.learn(3000)
        trained = evaluate(model, PointReachEnv(), 10, deterministic=True, seed=100).return_mean
        assert untrained < -40 and model.total_feedback == 300
        shares.append((trained - untrained) / (oracle_return - untrained))
    assert oracle_return > -15
    assert np.mean(shares) > 0.5, shares


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("algo", ALGOS)
def test_predict_save_load_identical(algo, tmp_path):
    model = _make(algo)
    model.learn(200)
    obs = np.stack([PointReachEnv().reset(seed=s)[0] for s in range(8)])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (8, 2) and np.all(np.abs(actions) <= 1)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    assert loaded.total_feedback == model.total_feedback
    probe = (np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32))
    np.testing.assert_array_equal(loaded.learned_reward(*probe), model.learned_reward(*probe))


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_same_result(algo):
    results = []
    for _ in range(2):
        model = _make(algo, seed=3)
        model.learn(160)
        results.append(np.concatenate([p.detach().numpy().ravel() for p in model.policy.parameters()]))
    np.testing.assert_array_equal(results[0], results[1])


class DiscreteActionEnv(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = spaces.Discrete(3)


@pytest.mark.parametrize("algo", ALGOS)
def test_rejects_non_box_action_space(algo):
    with pytest.raises(ValueError, match=f"{algo.__name__} only supports continuous"):
        algo("MlpPolicy", DiscreteActionEnv())
    with pytest.raises(ValueError, match="query_scheme"):
        algo("MlpPolicy", PointReachEnv(), query_scheme="k-center")


@pytest.mark.parametrize("bad", [dict(damping=-1.0), dict(correction_ratio=-0.1), dict(cg_iters=0), dict(power_iters=0)])
def test_parl_rejects_bad_correction_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PARL("MlpPolicy", PointReachEnv(), **bad)


# --------------------------------------------------------------------------- schedule, reset and rewards of the loop


def _record_rounds(model: PEBBLE, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, int]]:
    """(timestep, scheme, candidate pairs drawn) of every query round of ``model``."""
    rounds: list[tuple[int, str, int]] = []
    module = importlib.import_module("rlkit.pebble.pebble")
    original_sample = module.sample_segment_pairs
    original_ask = model._ask_teacher
    scheme_of_round: list[str] = []

    def ask(scheme: str) -> Any:
        scheme_of_round.append(scheme)
        return original_ask(scheme)

    def sample(episodes: Any, n: int, *args: Any) -> Any:
        rounds.append((model.num_timesteps, scheme_of_round[-1], n))
        return original_sample(episodes, n, *args)

    monkeypatch.setattr(module, "sample_segment_pairs", sample)
    model._ask_teacher = ask  # type: ignore[method-assign]
    return rounds


def test_first_round_is_uniform_and_later_rounds_come_every_num_interact_steps(monkeypatch):
    """The first query round, at learning_starts + unsup_steps, draws ``reward_batch`` uniform candidates; the next
    ones, every ``num_interact`` steps, choose by the query scheme among ``large_batch * reward_batch`` candidates."""
    model = _make(PEBBLE, num_interact=60, query_scheme="disagreement")
    rounds = _record_rounds(model, monkeypatch)
    model.learn(230)
    assert rounds == [(100, "uniform", 10), (160, "disagreement", 100), (220, "disagreement", 100)]


def test_first_reward_round_resets_the_critic_and_trains_reset_update_steps_on_the_learned_reward():
    """After the first reward learning the critic is re-initialised, its target copied from it and its optimizer
    fresh; then ``reset_update`` SAC steps run on r_hat (no intrinsic reward), before any env step."""
    model = _make(PEBBLE, reset_update=7)
    seen: dict[str, Any] = {"intrinsic": 0, "train": []}
    original_intrinsic, original_train, original_learn = model._intrinsic_reward, model.train, model._learn_reward

    def intrinsic(samples: Any) -> th.Tensor:
        seen["intrinsic"] += 1
        return original_intrinsic(samples)

    def learn_reward(scheme: str) -> None:
        if not model.reward_learned:
            seen["critic_before"] = [p.detach().clone() for p in model.critic.parameters()]
        original_learn(scheme)

    def train(gradient_steps: int, batch_size: int = 64) -> None:
        call = {"steps": gradient_steps, "t": model.num_timesteps, "learned": model.reward_learned}
        intrinsic_before = seen["intrinsic"]
        if gradient_steps == 7:
            critic, target = list(model.critic.parameters()), list(model.critic_target.parameters())
            call["synced"] = all(th.equal(a, b) for a, b in zip(critic, target, strict=True))
            call["reset"] = all(not th.equal(a, b) for a, b in zip(critic, seen["critic_before"], strict=True))
            call["fresh_optimizer"] = len(model.critic.optimizer.state) == 0
        original_train(gradient_steps, batch_size)
        call["intrinsic_calls"] = seen["intrinsic"] - intrinsic_before
        if gradient_steps == 7:
            call["adam_steps"] = {int(state["step"]) for state in model.critic.optimizer.state.values()}
        seen["train"].append(call)

    model._intrinsic_reward = intrinsic  # type: ignore[method-assign]
    model._learn_reward = learn_reward  # type: ignore[method-assign]
    model.train = train  # type: ignore[method-assign]
    model.learn(130)
    calls = seen["train"]
    reset = [c for c in calls if c["steps"] == 7]
    assert len(reset) == 1
    assert reset[0] == {
        "steps": 7,
        "t": 100,
        "learned": True,
        "synced": True,
        "reset": True,
        "fresh_optimizer": True,
        "intrinsic_calls": 0,
        "adam_steps": {7},
    }
    before = [c for c in calls if not c["learned"]]
    after = [c for c in calls if c["learned"] and c["steps"] == 1]
    assert [c["t"] for c in before] == list(range(51, 100))  # SAC steps start after learning_starts
    assert [c["t"] for c in after] == list(range(100, 131))
    assert all(c["intrinsic_calls"] == 1 for c in before)  # one intrinsic relabelling per SAC step of pre-training
    assert all(c["intrinsic_calls"] == 0 for c in after)


def test_sac_trains_on_the_intrinsic_reward_during_pre_training():
    """In the unsupervised phase the rewards of SAC's batches are the k-NN distances over their running std, not
    the zeros stored in the buffer."""
    model = _make(PEBBLE, topk=3)
    model.learn(70)
    batches: list[Any] = []
    sample = model.replay_buffer.sample

    def recording(*args: Any, **kwargs: Any) -> Any:
        batches.append(sample(*args, **kwargs))
        return batches[-1]

    model.replay_buffer.sample = recording  # type: ignore[method-assign]
    model.train(1, batch_size=8)
    (batch,) = batches
    states = th.as_tensor(model.replay_buffer.observations[: model.replay_buffer.pos, 0])
    fourth = th.cdist(batch.observations, states).sort(dim=1).values[:, 3]  # itself, then 3 neighbours
    expected = fourth / float(np.sqrt(model.state_entropy_stats.var))
    assert th.all(expected > 0)
    th.testing.assert_close(batch.rewards.squeeze(1), expected)


def test_learned_reward_is_the_mean_of_the_members_tanh_outputs():
    model = _make(PEBBLE, reward_ensemble_size=3)
    rng = np.random.default_rng(0)
    obs, act = rng.normal(size=(5, 4)).astype(np.float32), rng.uniform(-1, 1, size=(5, 2)).astype(np.float32)
    inputs = th.as_tensor(np.concatenate([obs, act], axis=1))
    with th.no_grad():
        members = [member(inputs).squeeze(1).numpy() for member in model.reward_model.members]
    assert np.ptp(np.stack(members), axis=0).min() > 1e-4  # the members differ
    np.testing.assert_allclose(model.learned_reward(obs, act), np.mean(members, axis=0), rtol=1e-6, atol=1e-7)


def test_teacher_thresholds_are_rescaled_before_every_round():
    """theta_equal = eps_equal * (mean return of the last 10 episodes * H / episode length), at each round's labelling."""
    model = _make(PEBBLE, num_interact=60, teacher="equal")
    seen: list[tuple[float, float]] = []
    label = model.teacher.label

    def recording(rewards0: np.ndarray, rewards1: np.ndarray) -> Any:
        returns = [ep.rewards.sum() * 10 / len(ep.rewards) for ep in list(model.episode_store.episodes)[-10:]]
        seen.append((model.teacher.threshold_equal, 0.1 * float(np.mean(returns))))
        return label(rewards0, rewards1)

    model.teacher.label = recording  # type: ignore[method-assign]
    model.learn(300)
    assert len(seen) == 4 and len({threshold for threshold, _ in seen}) == 4
    for threshold, expected in seen:
        assert threshold == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- PARL's queries and upper objective


def test_parl_upper_objective_value_and_score_function_gradient_on_fixed_pairs():
    """The surrogate is mean U + mean_i (U_i - mean U) S_i with S_i = sum_t log pi(a0_t|s0_t) + log pi(a1_t|s1_t) and
    U_i the members' mean y log sigma(R1 - R0) + (1 - y) log sigma(R0 - R1): its nu-gradient is grad_nu mean U, its
    theta-gradient mean_i (U_i - mean U) grad_theta S_i (the batch-mean baseline). Computed here pair by pair."""
    model = _make(PARL, reward_ensemble_size=2)
    rng = np.random.default_rng(1)
    n, horizon = 4, 3
    segs = [
        Segments(
            rng.normal(size=(n, horizon, 4)).astype(np.float32),
            rng.uniform(-0.8, 0.8, size=(n, horizon, 2)).astype(np.float32),
            np.zeros((n, horizon)),
        )
        for _ in range(2)
    ]
    targets = np.array([1.0, 0.0, 0.5, 1.0], np.float32)
    theta, nu = list(model.actor.parameters()), list(model.reward_model.parameters())
    upper = model.upper_objective(segs[0], segs[1], targets)
    got_theta = th.cat([g.flatten() for g in th.autograd.grad(upper, theta, retain_graph=True)])
    got_nu = th.cat([g.flatten() for g in th.autograd.grad(upper, nu)])

    def member_return(member: th.nn.Module, seg: Segments, i: int) -> th.Tensor:
        return member(th.as_tensor(np.concatenate([seg.observations[i], seg.actions[i]], axis=1))).sum()

    def log_density(seg: Segments, i: int) -> th.Tensor:
        """sum_t log of the tanh-squashed Gaussian at the stored actions."""
        mean, log_std, _ = model.actor.get_action_dist_params(th.as_tensor(seg.observations[i]))
        action = th.as_tensor(seg.actions[i])
        pre_tanh = 0.5 * th.log((1 + action) / (1 - action))
        gaussian = -0.5 * ((pre_tanh - mean) / log_std.exp()) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
        return (gaussian - th.log(1 - action**2 + 1e-6)).sum()

    utilities = []
    for i in range(n):
        y = float(targets[i])
        per_member = []
        for member in model.reward_model.members:
            logit = member_return(member, segs[1], i) - member_return(member, segs[0], i)
            per_member.append(y * th.log(th.sigmoid(logit)) + (1 - y) * th.log(th.sigmoid(-logit)))
        utilities.append(sum(per_member) / len(per_member))
    mean_utility = sum(utilities) / n
    expected_nu = th.cat([g.flatten() for g in th.autograd.grad(mean_utility, nu)])
    weights = [float((u - mean_utility).detach()) for u in utilities]
    assert min(abs(w) for w in weights) > 1e-3
    expected_theta = th.zeros_like(got_theta)
    value = float(mean_utility.detach())
    for i in range(n):
        score = log_density(segs[0], i) + log_density(segs[1], i)
        value += weights[i] * float(score.detach()) / n
        expected_theta += weights[i] / n * th.cat([g.flatten() for g in th.autograd.grad(score, theta)])
    assert float(upper.detach()) == pytest.approx(value, rel=1e-5)
    th.testing.assert_close(got_nu, expected_nu, rtol=1e-5, atol=1e-7)
    th.testing.assert_close(got_theta, expected_theta, rtol=1e-4, atol=1e-6)


def _episodes(store: Any, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        store.add(rng.normal(size=(12, 4)), rng.uniform(-1, 1, size=(12, 2)), rng.normal(size=12))


def test_parl_queries_only_episodes_finished_since_the_previous_round():
    model = _make(PARL)
    _episodes(model.episode_store, 3, seed=0)
    assert model._query_episodes() == list(model.episode_store.episodes)
    model._ask_teacher = lambda scheme: (None, None, np.zeros(0))  # type: ignore[method-assign,assignment,return-value]
    model._learn_reward("uniform")  # no labelled pair: the round ends before fitting
    assert model.episodes_at_last_query == 3
    assert model._query_episodes() == [model.episode_store.episodes[-1]]  # nothing new: the latest episode
    _episodes(model.episode_store, 2, seed=1)
    new = model._query_episodes()
    assert len(new) == 2 and all(ep is stored for ep, stored in zip(new, list(model.episode_store.episodes)[-2:], strict=True))


def test_parl_hypergradient_is_taken_from_the_second_round_on():
    """The first round fits the reward only (the policy was trained on the intrinsic reward, not on r_nu)."""
    model = _make(PARL, num_interact=60)
    rounds: list[int] = []
    terms = model.hypergradient_terms

    def recording(*args: Any) -> Any:
        rounds.append(model.num_timesteps)
        return terms(*args)

    model.hypergradient_terms = recording  # type: ignore[method-assign]
    model.learn(300)
    assert model.total_feedback == 40 and rounds == [160, 220, 280]
