"""AlignDiff (Dong et al., ICLR 2024) and its goal-conditioned BC baseline, on scripted attribute labels."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch.nn import functional as F

from rlkit.aligndiff.attributes import (
    AttributeAnnotator,
    attributes_of,
    labels_to_targets,
    masked_errors,
    strength_bins,
)
from rlkit.aligndiff.policies import NETWORK_SIZES, AlignDiffPolicy, AttributeBCPolicy
from rlkit.common.diffusion import edm_denoise, edm_loss_weight, edm_training_sigmas, euler_sample, karras_sigmas
from rlkit.common.offline import OfflineAlgorithm
from rlkit.common.sequence import WindowSampler
from rlkit.data.minari import OfflineDataset


def select_candidate(strengths: np.ndarray, target: np.ndarray, mask: np.ndarray) -> int:
    """Index of the candidate whose normalised strengths ``(n, k)`` have the smallest masked squared error."""
    return int(np.argmin(masked_errors(strengths, target, mask)))


def plan_loss_weights(horizon: int, obs_dim: int, action_dim: int, first_action_weight: float = 10.0) -> th.Tensor:
    """Per-entry loss weights of a plan ``(H, obs_dim + action_dim)``: 0 on s_0 (inpainted), ``first_action_weight`` on a_0."""
    weights = th.ones(horizon, obs_dim + action_dim)
    weights[0, :obs_dim] = 0.0
    weights[0, obs_dim:] = first_action_weight
    return weights


def planner_loss(denoised: th.Tensor, clean: th.Tensor, sigma: th.Tensor, sigma_data: float, weights: th.Tensor) -> th.Tensor:
    """EDM's weighted loss ``mean lambda(sigma) w * (D(x + n; sigma) - x)^2`` over the batch and every entry.

    :param denoised: ``D(x + n; sigma)`` ``(N, H, x_dim)``
    :param clean: the plans x
    :param sigma: noise levels ``(N,)``
    :param sigma_data: standard deviation of the data
    :param weights: per-entry weights ``(H, x_dim)`` (:func:`plan_loss_weights`)
    """
    lam = edm_loss_weight(sigma, sigma_data).view(-1, 1, 1)
    return (lam * weights * (denoised - clean) ** 2).mean()


class AttributeConditioned(OfflineAlgorithm):
    """Shared pipeline of AlignDiff and its GC baseline: scripted labels, the attribute strength model, relabelling.

    At the first :meth:`learn`: ``n_labels`` pairs of H-step windows (drawn with ``label_seed``, the same
    for every training seed) are labelled per attribute by :class:`~rlkit.aligndiff.attributes.AttributeAnnotator`;
    the attribute strength model is fitted on them (``asm_steps`` steps per member); every window
    starting at a multiple of ``relabel_stride`` steps is relabelled with its strengths, whose min and max
    (saved in the model) normalise strengths to [0, 1]. The ground-truth attributes of those windows
    give :attr:`attribute_min` / :attr:`attribute_max`, the physics scale of the evaluation.

    :param policy: the policy model
    :param env: the environment, its id, or ``None``
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param attributes: the task whose scripted attributes label the data (a key of
        :data:`~rlkit.aligndiff.attributes.ATTRIBUTES`); ``None``: the env's or the dataset's id
    :param n_labels: labelled pairs (the paper's Hopper: 1,228)
    :param eps_equal: the annotator's equal band, in attribute standard deviations
    :param label_seed: seed of the labelled pairs and of the annotator
    :param horizon: H, steps of the windows and plans (Hopper 100, Walker 32)
    :param n_bins: V, bins per attribute (100)
    :param keep_prob: condition dropout: each attribute is kept with this probability in training (0.8)
    :param asm_steps: AdamW steps of each ASM member (3,000)
    :param asm_batch_size: pairs per ASM step (256)
    :param asm_learning_rate: ASM learning rate (1e-4)
    :param relabel_stride: relabel windows starting every this many steps (1: all, as the paper)
    :param network_size: ``"paper"`` or ``"cpu"`` (see :data:`~rlkit.aligndiff.policies.NETWORK_SIZES`)
    :param learning_rate: learning rate of the conditioned model
    :param batch_size: windows per gradient step
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy: Any

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        attributes: str | None = None,
        n_labels: int = 1228,
        eps_equal: float = 0.1,
        label_seed: int = 0,
        horizon: int = 100,
        n_bins: int = 100,
        keep_prob: float = 0.8,
        asm_steps: int = 3000,
        asm_batch_size: int = 256,
        asm_learning_rate: float = 1e-4,
        relabel_stride: int = 1,
        network_size: str = "paper",
        learning_rate: float | Schedule = 2e-4,
        batch_size: int = 32,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if network_size not in NETWORK_SIZES:
            raise ValueError(f"Unknown network_size {network_size!r}; known: {', '.join(NETWORK_SIZES)}")
        if n_labels < 2 or horizon < 2 or n_bins < 2 or relabel_stride < 1 or asm_steps < 0:
            raise ValueError(
                f"need n_labels >= 2, horizon >= 2, n_bins >= 2, relabel_stride >= 1 and asm_steps >= 0; got "
                f"{n_labels}, {horizon}, {n_bins}, {relabel_stride}, {asm_steps}"
            )
        if not 0.0 < keep_prob < 1.0:
            raise ValueError(
                f"keep_prob must lie in (0, 1), got {keep_prob}: with 1 the all-masked (unconditional) branch of "
                "classifier-free guidance is never trained"
            )
        self.attributes = attributes
        self.n_labels = n_labels
        self.eps_equal = eps_equal
        self.label_seed = label_seed
        self.horizon = horizon
        self.n_bins = n_bins
        self.keep_prob = keep_prob
        self.asm_steps = asm_steps
        self.asm_batch_size = asm_batch_size
        self.asm_learning_rate = asm_learning_rate
        self.relabel_stride = relabel_stride
        self.network_size = network_size
        self.attributes_ready = False
        self.attribute_task: str | None = None
        self.attribute_names: list[str] = []
        self.attribute_min: np.ndarray | None = None
        self.attribute_max: np.ndarray | None = None
        self.asm_final_loss: float | None = None
        self._sampler: WindowSampler | None = None
        self._raw_sampler: WindowSampler | None = None
        self._windows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._target = np.zeros(0, dtype=np.float32)
        self._target_mask = np.zeros(0, dtype=np.float32)
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    # ------------------------------------------------------------------ set-up

    def _task_id(self, dataset: OfflineDataset) -> str:
        if self.attributes is not None:
            return self.attributes
        spec = None if self.env is None else self.env.get_attr("spec")[0]
        task = getattr(spec, "id", None) or dataset.env_id
        if task is None:
            raise ValueError(f"{type(self).__name__} cannot tell which attributes to script: pass attributes=<task id>")
        return task

    def _attach_dataset(self, dataset: OfflineDataset) -> None:
        super()._attach_dataset(dataset)
        assert isinstance(self.action_space, spaces.Box)
        self.attribute_task = self._task_id(dataset)
        self.attribute_names = [a.name for a in attributes_of(self.attribute_task)]
        low, high = self.action_space.low, self.action_space.high
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"{type(self).__name__} needs a bounded Box action space, got {self.action_space}")
        self._sampler = WindowSampler(dataset, self.horizon, self.obs_mean, self.obs_std, low, high)
        self._raw_sampler = WindowSampler(dataset, self.horizon)
        if int(dataset.episode_lengths.max()) < self.horizon:
            raise ValueError(
                f"No episode of the dataset has horizon={self.horizon} steps (longest {dataset.episode_lengths.max()}): "
                "use a shorter horizon"
            )
        self.policy_kwargs.setdefault("horizon", self.horizon)
        self.policy_kwargs.setdefault("n_attributes", len(self.attribute_names))
        self._windows = None

    def _setup_model(self) -> None:
        super()._setup_model()
        self._rng = np.random.default_rng(self.seed)
        k = len(self.attribute_names)
        if len(self._target) != k:
            self._target, self._target_mask = np.full(k, 0.5, dtype=np.float32), np.ones(k, dtype=np.float32)

    @property
    def n_attributes(self) -> int:
        return len(self.attribute_names)

    @property
    def attribute_model(self) -> Any:
        """The attribute strength model (:class:`~rlkit.aligndiff.attributes.AttributeStrengthModel`)."""
        return self.policy.attribute_model

    def annotator(self) -> AttributeAnnotator:
        """The scripted annotator of this model's attributes (``eps_equal``, seeded with ``label_seed``)."""
        assert self.attribute_task is not None
        return AttributeAnnotator(attributes_of(self.attribute_task), self.eps_equal, seed=self.label_seed)

    def _labelled_pairs(self, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n_pairs`` pairs of full windows: normalised states of both and the targets ``(n_pairs, k)``."""
        assert self._sampler is not None and self._raw_sampler is not None
        rng = np.random.default_rng(seed)
        first = self._sampler.sample_starts(n_pairs, rng, full=True)
        second = self._sampler.sample_starts(n_pairs, rng, full=True)
        annotator = self.annotator()
        scale_windows = self._raw_sampler.sample(min(2000, 4 * n_pairs), np.random.default_rng(seed + 1), full=True)
        annotator.set_scales(scale_windows.observations)
        labels = annotator.label(
            self._raw_sampler.windows(*first).observations, self._raw_sampler.windows(*second).observations
        )
        observations0, observations1 = self._sampler.windows(*first).observations, self._sampler.windows(*second).observations
        return observations0, observations1, labels_to_targets(labels)

    def prepare_attributes(self) -> None:
        """Label pairs, fit the attribute strength model (once) and relabel the dataset's windows (after each load)."""
        assert self._sampler is not None and self._raw_sampler is not None
        if not self.attributes_ready:
            obs0, obs1, targets = self._labelled_pairs(self.n_labels, self.label_seed)
            losses = self.attribute_model.fit(
                obs0, obs1, targets, self.asm_steps, self.asm_batch_size, self.asm_learning_rate, seed=self.seed
            )
            self.asm_final_loss = float(np.mean(losses[-20:])) if losses else None
        episodes, starts = [], []
        for episode, length in enumerate(self._sampler.episode_lengths):
            if length >= self.horizon:
                s = np.arange(0, length - self.horizon + 1, self.relabel_stride)
                episodes.append(np.full(len(s), episode))
                starts.append(s)
        episode_index, start_index = np.concatenate(episodes), np.concatenate(starts)
        chunks = range(0, len(episode_index), 2048)
        raw = np.concatenate(
            [
                self.attribute_model.strengths(
                    self._sampler.windows(episode_index[i : i + 2048], start_index[i : i + 2048]).observations
                )
                for i in chunks
            ]
        )
        if not self.attributes_ready:
            self.attribute_model.set_statistics(raw)
            truth = self.annotator().values(self._raw_sampler.windows(episode_index, start_index).observations)
            self.attribute_min, self.attribute_max = truth.min(axis=0), truth.max(axis=0)
            self.attributes_ready = True
        self._windows = (episode_index, start_index, self.attribute_model.normalize(raw))

    def learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> Any:
        """Prepare the attributes (first call, or first after loading) and run ``total_timesteps`` gradient steps."""
        if self.replay_buffer is not None and self._windows is None:
            self.prepare_attributes()
        return super().learn(total_timesteps, *args, **kwargs)

    def _sample_windows(self, batch_size: int) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """Relabelled windows: normalised states, scaled actions, normalised strengths and dropout masks."""
        assert self._sampler is not None and self._windows is not None
        episodes, starts, strengths = self._windows
        index = self._rng.integers(len(episodes), size=batch_size)
        windows = self._sampler.windows(episodes[index], starts[index])
        as_tensor = lambda x: th.as_tensor(x, dtype=th.float32, device=self.device)  # noqa: E731
        mask = (self._rng.random((batch_size, self.n_attributes)) < self.keep_prob).astype(np.float32)
        return as_tensor(windows.observations), as_tensor(windows.actions), as_tensor(strengths[index]), as_tensor(mask)

    # ------------------------------------------------------------------ targets and judging

    def set_target(self, strengths: np.ndarray | list[float], mask: np.ndarray | list[float] | None = None) -> None:
        """The attribute strengths to match from now on (between episodes), each in [0, 1], and which ones count.

        :param strengths: target v, one normalised strength per attribute (:attr:`attribute_names`)
        :param mask: 1 for the attributes that matter, 0 for "don't care" (default: all 1)
        """
        v = np.asarray(strengths, dtype=np.float32).reshape(-1)
        m = np.ones_like(v) if mask is None else np.asarray(mask, dtype=np.float32).reshape(-1)
        if v.shape != (self.n_attributes,) or m.shape != (self.n_attributes,):
            raise ValueError(
                f"set_target needs {self.n_attributes} strengths and mask entries ({', '.join(self.attribute_names)}), "
                f"got {v.shape} and {m.shape}"
            )
        if np.any((v < 0) | (v > 1)) or not np.all((m == 0) | (m == 1)):
            raise ValueError(f"strengths must lie in [0, 1] and the mask be 0 or 1, got {v}, {m}")
        self._target, self._target_mask = v, m

    def judge(self, raw_observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised strengths of raw observation windows ``(N, L, obs_dim)``: by the ASM and by physics.

        :return: the attribute model's strengths and the ground-truth attributes, min-max normalised with
            the relabelled windows' statistics, each ``(N, k)`` (the physics ones clipped to [0, 1])
        """
        assert self.attribute_min is not None and self.attribute_max is not None
        normalised = self.normalize_observation(raw_observations)
        by_model = self.attribute_model.normalized_strengths(normalised)
        truth = self.annotator().values(raw_observations)
        by_physics = np.clip((truth - self.attribute_min) / np.maximum(self.attribute_max - self.attribute_min, 1e-8), 0, 1)
        return by_model, by_physics.astype(np.float32)

    def attribute_accuracy(self, n_pairs: int = 500, seed: int = 12345) -> np.ndarray:
        """Pairwise accuracy of the ASM per attribute on fresh scripted pairs (ties left out): ``(k,)``."""
        obs0, obs1, targets = self._labelled_pairs(n_pairs, seed)
        diff = self.attribute_model.strengths(obs1) - self.attribute_model.strengths(obs0)
        strict = targets != 0.5
        correct = (diff > 0) == (targets > 0.5)
        return np.array([correct[strict[:, i], i].mean() for i in range(self.n_attributes)])

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_sampler", "_raw_sampler", "_windows", "_rng"]


class AlignDiff(AttributeConditioned):
    """AlignDiff (Dong et al., ICLR 2024): an attribute-conditioned diffusion planner with an ASM director.

    Paper: https://arxiv.org/abs/2309.14207; official code ZibinDong/AlignDiff-ICLR2024 (refactored
    after the paper: EDM in place of the paper's DDPM / DDIM, and 5 sampling steps). rlkit follows the
    code's EDM (``diffusion/ode.py``), as the issue asks, with the paper's step count where they disagree.

    Training (one gradient step): a batch of relabelled H-step windows ``x = [s_norm, a_scaled]``, their
    strength bins v (:func:`~rlkit.aligndiff.attributes.strength_bins`) and masks ``m ~ Bernoulli(keep_prob)^k``;
    ``ln sigma ~ N(P_mean, P_std^2)``, ``x + n`` with ``n ~ N(0, sigma^2)`` except on s_0 (inpainted: never
    noised); the EDM loss ``mean lambda(sigma) w (D(x + n; sigma, v, m) - x)^2`` with weight 0 on s_0 and
    ``first_action_weight`` on a_0 (:func:`planner_loss`); AdamW, gradient clip, EMA of the denoiser.

    Planning (:meth:`plan`): ``n_samples`` candidates from ``sigma_max`` noise with s_0 set to the current
    normalised state, ``sampling_steps`` Euler steps of the probability-flow ODE on Karras' schedule with
    classifier-free guidance ``D~ = w D(v, m) + (1 - w) D(v, 0)`` (the all-masked condition is the
    unconditional one), s_0 re-inpainted after every step; the ASM scores each candidate's states and
    the one with the smallest masked error ``||(v - zeta) m||^2`` is kept; its first action is executed
    (clipped to [-1, 1]). ``predict`` replans every ``replan_every`` steps (1: every step, as the paper)
    and otherwise executes the kept plan's next actions.

    Defaults are the paper's and the official code's (DiT 384 / 6 heads / depth 12, ASM 128 / 4 / 2,
    V = 100, H = 100 for Hopper, AdamW 2e-4 / wd 1e-4, clip 10, EMA 0.999, batch 32, keep 0.8,
    a_0 weight 10, sigma 0.002..80, rho 7, P_mean -1.2, P_std 1.2, guidance 1.5, 64 candidates); the
    paper's 10 sampling steps for Hopper (the refactored code: 5). ``network_size="cpu"`` is a stated
    CPU-size configuration.

    :param policy: "MlpPolicy" (the :class:`~rlkit.aligndiff.policies.AlignDiffPolicy`)
    :param env: the environment, its id, or ``None``
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param sampling_steps: Euler steps per plan (paper: 10 for Hopper and Walker, 20 for Humanoid; code: 5)
    :param guidance_weight: w of classifier-free guidance (code: 1.5; its evaluation: 2.0 Hopper, 3.0 Walker)
    :param n_samples: candidates per plan (64; the official evaluation: 256); 1 skips the selection
    :param replan_every: steps executed from one plan before planning again (1: receding horizon)
    :param sigma_min: smallest noise level of sampling
    :param sigma_max: largest noise level (the start of sampling)
    :param rho: curvature of Karras' schedule
    :param p_mean: mean of the training ``ln sigma``
    :param p_std: standard deviation of the training ``ln sigma``
    :param first_action_weight: loss weight of a_0 (10)
    :param ema_decay: EMA decay of the denoiser (0.999)
    :param weight_decay: AdamW weight decay (1e-4)
    :param max_grad_norm: gradient-norm clip (10)
    :param kwargs: :class:`AttributeConditioned`'s parameters (labels, ASM, horizon, bins, network size, ...)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": AlignDiffPolicy, "DiTPolicy": AlignDiffPolicy}
    policy: AlignDiffPolicy

    def __init__(
        self,
        policy: str | type[AlignDiffPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        sampling_steps: int = 10,
        guidance_weight: float = 1.5,
        n_samples: int = 64,
        replan_every: int = 1,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        first_action_weight: float = 10.0,
        ema_decay: float = 0.999,
        weight_decay: float = 1e-4,
        max_grad_norm: float = 10.0,
        network_size: str = "paper",
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if sampling_steps < 1 or n_samples < 1 or replan_every < 1:
            raise ValueError(
                f"sampling_steps, n_samples and replan_every must be >= 1, got {sampling_steps}, {n_samples}, {replan_every}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        self.sampling_steps = sampling_steps
        self.guidance_weight = guidance_weight
        self.n_samples = n_samples
        self.replan_every = replan_every
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.p_mean, self.p_std = p_mean, p_std
        self.first_action_weight = first_action_weight
        self.ema_decay = ema_decay
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm
        self.sigma_data: float = 1.0
        sizes = dict(NETWORK_SIZES[network_size if network_size in NETWORK_SIZES else "paper"])
        policy_kwargs = {**sizes, **(policy_kwargs or {})}
        super().__init__(policy, env, dataset=dataset, network_size=network_size, policy_kwargs=policy_kwargs, **kwargs)

    def _attach_dataset(self, dataset: OfflineDataset) -> None:
        super()._attach_dataset(dataset)
        assert self._sampler is not None
        self.policy_kwargs.setdefault("n_bins", self.n_bins)
        if self.sigma_data == 1.0:
            self.sigma_data = float(np.concatenate([self._sampler.observations, self._sampler.actions], axis=1).std())

    def _setup_model(self) -> None:
        super()._setup_model()
        self.optimizer = th.optim.AdamW(
            self.policy.denoiser.parameters(), lr=self.lr_schedule(1), weight_decay=self.weight_decay
        )
        self.policy.planner = self._policy_action
        obs_dim, action_dim = self.policy.obs_dim, self.policy.action_dim
        self._loss_weights = plan_loss_weights(self.horizon, obs_dim, action_dim, self.first_action_weight).to(self.device)
        self._plan_generator = th.Generator(device=self.device)
        self._plan_generator.manual_seed(0 if self.seed is None else int(self.seed))

    # ------------------------------------------------------------------ training

    def denoise(self, x: th.Tensor, sigma: th.Tensor, bins: th.Tensor, mask: th.Tensor, ema: bool = False) -> th.Tensor:
        """``D(x; sigma, v, m)`` of the online (or EMA) denoiser."""
        network = self.policy.ema_denoiser if ema else self.policy.denoiser
        return edm_denoise(network, x, sigma, self.sigma_data, bins=bins, mask=mask)

    def noisy_plans(self, clean: th.Tensor, sigma: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """``x + sigma n`` with s_0 left clean (inpainted)."""
        noisy = clean + sigma.view(-1, 1, 1) * noise
        noisy[:, 0, : self.policy.obs_dim] = clean[:, 0, : self.policy.obs_dim]
        return noisy

    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.optimizer)
        for _ in range(gradient_steps):
            observations, actions, strengths, mask = self._sample_windows(batch_size)
            clean = th.cat([observations, actions], dim=-1)
            sigma = edm_training_sigmas(batch_size, self.p_mean, self.p_std, device=self.device)
            noisy = self.noisy_plans(clean, sigma, th.randn_like(clean))
            denoised = self.denoise(noisy, sigma, strength_bins(strengths, self.n_bins).to(self.device), mask)
            loss = planner_loss(denoised, clean, sigma, self.sigma_data, self._loss_weights)
            self.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.denoiser.parameters(), self.max_grad_norm)
            self.optimizer.step()
            with th.no_grad():
                for ema, online in zip(self.policy.ema_denoiser.parameters(), self.policy.denoiser.parameters(), strict=True):
                    ema.lerp_(online, 1.0 - self.ema_decay)
        self.logger.record("train/loss", loss.item())

    # ------------------------------------------------------------------ planning

    def guided_denoise(
        self, x: th.Tensor, sigma: th.Tensor, bins: th.Tensor, mask: th.Tensor, guidance_weight: float, ema: bool = True
    ) -> th.Tensor:
        """Classifier-free guidance ``w D(x; sigma, v, m) + (1 - w) D(x; sigma, v, 0)``."""
        both = self.denoise(
            th.cat([x, x]), th.cat([sigma, sigma]), th.cat([bins, bins]), th.cat([mask, th.zeros_like(mask)]), ema=ema
        )
        conditional, unconditional = both.chunk(2)
        return guidance_weight * conditional + (1.0 - guidance_weight) * unconditional

    @th.no_grad()
    def sample_plans(
        self,
        observations: th.Tensor,
        target: np.ndarray,
        mask: np.ndarray,
        n_samples: int,
        generator: th.Generator | None = None,
    ) -> th.Tensor:
        """``n_samples`` plans ``(N, n, H, x_dim)`` from each normalised state ``(N, obs_dim)``."""
        obs_dim = self.policy.obs_dim
        n = len(observations)
        shape = (n * n_samples, self.horizon, obs_dim + self.policy.action_dim)
        start = observations.repeat_interleave(n_samples, dim=0)
        bins = strength_bins(np.broadcast_to(target, (shape[0], self.n_attributes)).copy(), self.n_bins).to(self.device)
        masks = th.as_tensor(np.broadcast_to(mask, (shape[0], self.n_attributes)).copy(), dtype=th.float32, device=self.device)

        def inpaint(x: th.Tensor) -> th.Tensor:
            x[:, 0, :obs_dim] = start
            return x

        def denoise(x: th.Tensor, sigma: th.Tensor) -> th.Tensor:
            return self.guided_denoise(x, sigma, bins, masks, self.guidance_weight)

        x = self.sigma_max * th.randn(shape, generator=generator, device=self.device)
        sigmas = karras_sigmas(self.sampling_steps, self.sigma_min, self.sigma_max, self.rho)
        return euler_sample(denoise, x, sigmas, inpaint).view(n, n_samples, self.horizon, -1)

    def plan(
        self,
        normalized_observations: np.ndarray | th.Tensor,
        n_samples: int | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """The selected plan ``(N, H, x_dim)`` (normalised states, scaled actions) from normalised states ``(N, obs_dim)``.

        :param normalized_observations: current states, normalised with the dataset statistics
        :param n_samples: candidates (default: the model's ``n_samples``); 1 takes the only one (no selection)
        :param seed: seed of the sampling noise (``None``: the model's generator, seeded with its seed)
        """
        self.policy.set_training_mode(False)
        obs = th.as_tensor(normalized_observations, dtype=th.float32, device=self.device).reshape(-1, self.policy.obs_dim)
        generator = self._plan_generator
        if seed is not None:
            generator = th.Generator(device=self.device)
            generator.manual_seed(seed)
        n = self.n_samples if n_samples is None else n_samples
        plans = self.sample_plans(obs, self._target, self._target_mask, n, generator)
        if n == 1:
            return plans[:, 0].cpu().numpy()
        obs_dim = self.policy.obs_dim
        chosen = []
        for candidates in plans:
            strengths = self.attribute_model.normalized_strengths(candidates[:, :, :obs_dim])
            chosen.append(candidates[select_candidate(strengths, self._target, self._target_mask)])
        return th.stack(chosen).cpu().numpy()

    def _policy_action(self, normalized_observations: th.Tensor) -> th.Tensor:
        plan = self.plan(normalized_observations, n_samples=1)
        return th.as_tensor(plan[:, 0, self.policy.obs_dim :], device=self.device).clamp(-1.0, 1.0)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The action of the current plan, replanning every ``replan_every`` steps (carried in SB3's ``state``).

        ``state`` holds the kept plan's actions and the steps executed from it; pass it back at the next
        step and ``episode_start=True`` where an episode starts (or ``state=None``): those envs replan.

        :param observation: the observation(s), as the env returns them
        :param state: the state returned by the previous call, or ``None``
        :param episode_start: per env, whether this observation starts an episode
        :param deterministic: unused (the plan's noise comes from the model's seeded generator)
        :return: the action(s) in the env's bounds and the new state
        """
        if isinstance(observation, dict):
            raise ValueError("AlignDiff needs Box observations, got a dict observation")
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.shape == self.observation_space.shape
        obs = self.normalize_observation(obs.reshape(-1, spaces.flatdim(self.observation_space)))
        n, action_dim = len(obs), self.policy.action_dim
        if state is None:
            actions = np.zeros((n, self.horizon, action_dim), dtype=np.float32)
            executed = np.full(n, self.replan_every, dtype=np.int64)
        else:
            actions, executed = state[0].copy(), state[1].copy()
        if episode_start is not None:
            executed[np.asarray(episode_start, dtype=bool).reshape(-1)] = self.replan_every
        replan = executed >= min(self.replan_every, self.horizon)
        if replan.any():
            plans = self.plan(obs[replan])
            actions[replan] = np.clip(plans[:, :, self.policy.obs_dim :], -1.0, 1.0)
            executed[replan] = 0
        scaled = actions[np.arange(n), executed]
        executed = executed + 1
        action = self.policy.unscale_action(scaled)
        return (action[0] if single else action), (actions, executed)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "optimizer", "_loss_weights", "_plan_generator"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "optimizer"], []


class AttributeBC(AttributeConditioned):
    """Goal-conditioned behaviour cloning on AlignDiff's relabelled windows (the paper's GC baseline, RvS-style).

    Each step draws relabelled windows (the same ASM, labels and relabelling as :class:`AlignDiff`)
    and regresses the window's first action on its first state, the window's normalised strengths v
    and a dropout mask m (``keep_prob``): ``mean ||pi(s_0, v m, m) - a_0||^2``. It acts in one pass,
    with the target of :meth:`set_target`: a single-output baseline, with no candidate selection.

    :param policy: "MlpPolicy" (:class:`~rlkit.aligndiff.policies.AttributeBCPolicy`)
    :param env: the environment, its id, or ``None``
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param learning_rate: Adam learning rate (3e-4)
    :param batch_size: windows per step (256)
    :param network_size: size of the ASM, as AlignDiff's (``"paper"`` or ``"cpu"``)
    :param policy_kwargs: keyword arguments of the policy (``net_arch``: [256, 256])
    :param kwargs: :class:`AttributeConditioned`'s parameters
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": AttributeBCPolicy}
    policy: AttributeBCPolicy

    def __init__(
        self,
        policy: str | type[AttributeBCPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        network_size: str = "paper",
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        sizes = NETWORK_SIZES[network_size if network_size in NETWORK_SIZES else "paper"]
        policy_kwargs = {key: sizes[key] for key in ("asm_d_model", "asm_layers", "asm_ffn")} | dict(policy_kwargs or {})
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            network_size=network_size,
            policy_kwargs=policy_kwargs,
            **kwargs,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        self.optimizer = th.optim.Adam(self.policy.actor.parameters(), lr=self.lr_schedule(1))
        self.set_target(self._target, self._target_mask)

    def set_target(self, strengths: np.ndarray | list[float], mask: np.ndarray | list[float] | None = None) -> None:
        super().set_target(strengths, mask)
        self.policy.target = th.as_tensor(self._target)
        self.policy.target_mask = th.as_tensor(self._target_mask)

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.optimizer)
        for _ in range(gradient_steps):
            observations, actions, strengths, mask = self._sample_windows(batch_size)
            loss = F.mse_loss(self.policy.act(observations[:, 0], strengths, mask), actions[:, 0])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.logger.record("train/loss", loss.item())

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "optimizer"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "optimizer"], []
