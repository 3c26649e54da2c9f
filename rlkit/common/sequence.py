"""Windows over the episodes of an offline dataset, for sequence models (OPPO, PEARL, AlignDiff).

A window is ``K`` consecutive steps of one episode with the absolute timestep of
each step in its episode (for a timestep embedding) and an attention mask. A
window that would run past the end of its episode keeps its real steps and is
**left-padded**: the real steps sit at the right end, padding (mask 0) at the
left, as in Decision Transformer and OPPO (``get_batch`` of bkkgbkjb/OPPO). The
same layout holds the history of a policy acting in an env
(:class:`RollingHistory`): the newest step is always the last position, and an
episode's first steps are padded on the left.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlkit.data.minari import OfflineDataset

#: episode sampling schemes of :meth:`WindowSampler.sample`
WEIGHTINGS = ("length", "uniform")


class Windows(NamedTuple):
    """A batch of N windows of K steps, left-padded where the episode ended early."""

    #: shape ``(N, K, obs_dim)`` (normalised when the sampler normalises); padding holds ``pad_observation``
    observations: np.ndarray
    #: shape ``(N, K, action_dim)`` (scaled to [-1, 1] when the sampler scales); padding holds ``pad_action``
    actions: np.ndarray
    #: true per-step rewards, shape ``(N, K)``, 0 at padding
    rewards: np.ndarray
    #: absolute step index of each step in its episode, shape ``(N, K)``, int64, 0 at padding
    timesteps: np.ndarray
    #: True at real steps, False at padding, shape ``(N, K)``
    mask: np.ndarray
    #: episode index of each window, shape ``(N,)``
    episodes: np.ndarray
    #: step of the episode where each window starts, shape ``(N,)``
    starts: np.ndarray

    def take(self, index: np.ndarray) -> Windows:
        """The windows at ``index`` (integer indices or a boolean mask)."""
        return Windows(*(field[index] for field in self))


class WindowSampler:
    """Cuts windows of ``window`` steps out of the episodes of an :class:`~rlkit.data.minari.OfflineDataset`.

    :param dataset: the dataset (its ``episode_ends`` define the episodes)
    :param window: K, steps per window
    :param obs_mean: subtract from the observations (``None``: no normalisation)
    :param obs_std: divide the observations by this (with ``obs_mean``)
    :param action_low: lower action bound; with ``action_high`` the actions are scaled to [-1, 1]
    :param action_high: upper action bound
    :param pad_observation: value of padded observations (after normalisation)
    :param pad_action: value of padded actions (OPPO's code uses -10 in training; models must not read it)
    """

    def __init__(
        self,
        dataset: OfflineDataset,
        window: int,
        obs_mean: np.ndarray | None = None,
        obs_std: np.ndarray | None = None,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        pad_observation: float = 0.0,
        pad_action: float = 0.0,
    ) -> None:
        if window <= 0:
            raise ValueError(f"window must be a positive number of steps, got {window}")
        self.window = window
        observations = dataset.observations.reshape(len(dataset), -1)
        if obs_mean is not None:
            std = np.ones_like(obs_mean) if obs_std is None else obs_std
            observations = (observations - obs_mean.reshape(1, -1)) / std.reshape(1, -1)
        actions = dataset.actions
        if action_low is not None and action_high is not None:
            actions = 2.0 * (actions - action_low) / (action_high - action_low) - 1.0
        self.observations = np.ascontiguousarray(observations, dtype=np.float32)
        self.actions = np.ascontiguousarray(actions, dtype=np.float32)
        self.rewards = dataset.rewards
        self.episode_ends = dataset.episode_ends.astype(np.int64)
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)
        self.episode_lengths = self.episode_ends - self.episode_starts
        last = self.episode_ends - 1
        #: whether each episode ended by a true termination (not a time limit or the end of the data)
        self.episode_terminated = dataset.terminals[last] > 0
        self.pad_observation = pad_observation
        self.pad_action = pad_action
        self._cumulative_rewards = np.concatenate([[0.0], np.cumsum(self.rewards, dtype=np.float64)])

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    def sample_starts(
        self, n: int, rng: np.random.Generator, weighting: str = "length", full: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (episode, start) pairs.

        :param n: number of windows
        :param rng: the random generator
        :param weighting: ``"length"``: episodes with probability proportional to their length
            (OPPO and Decision Transformer); ``"uniform"``: every episode alike
        :param full: only windows that fit inside their episode (no padding; episodes of fewer than K
            steps are never drawn); otherwise the start is uniform over the whole episode
        :return: episode indices and start steps, each of shape ``(n,)``
        """
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown weighting {weighting!r}; known: {', '.join(WEIGHTINGS)}")
        room = self.episode_lengths - (self.window - 1 if full else 0)
        eligible = np.flatnonzero(room > 0)
        if len(eligible) == 0:
            raise ValueError(
                f"No episode of the dataset has at least {self.window} steps (longest: {self.episode_lengths.max()}): "
                "use a shorter window or a dataset with longer episodes"
            )
        weights = room[eligible].astype(np.float64) if weighting == "length" else np.ones(len(eligible))
        episodes = eligible[rng.choice(len(eligible), size=n, p=weights / weights.sum())]
        starts = (rng.random(n) * room[episodes]).astype(np.int64)
        return episodes, np.minimum(starts, room[episodes] - 1)

    def windows(self, episodes: np.ndarray, starts: np.ndarray) -> Windows:
        """The windows that start at step ``starts[i]`` of episode ``episodes[i]``, left-padded past the end.

        :param episodes: episode indices, shape ``(N,)``
        :param starts: start steps inside each episode, shape ``(N,)``
        """
        episodes = np.asarray(episodes, dtype=np.int64)
        starts = np.asarray(starts, dtype=np.int64)
        lengths = self.episode_lengths[episodes]
        if np.any(starts < 0) or np.any(starts >= lengths):
            raise ValueError("every window start must be a step of its episode (0 <= start < episode length)")
        n_real = np.minimum(self.window, lengths - starts)
        offsets = np.arange(self.window)[None, :]
        n_pad = (self.window - n_real)[:, None]
        mask = offsets >= n_pad
        timesteps = np.where(mask, starts[:, None] + offsets - n_pad, 0)
        rows = self.episode_starts[episodes][:, None] + timesteps
        observations = np.where(mask[..., None], self.observations[rows], np.float32(self.pad_observation))
        actions = np.where(mask[..., None], self.actions[rows], np.float32(self.pad_action))
        rewards = np.where(mask, self.rewards[rows], np.float32(0.0))
        return Windows(
            observations.astype(np.float32),
            actions.astype(np.float32),
            rewards.astype(np.float32),
            timesteps.astype(np.int64),
            mask,
            episodes,
            starts,
        )

    def sample(self, n: int, rng: np.random.Generator, weighting: str = "length", full: bool = False) -> Windows:
        """``n`` random windows (see :meth:`sample_starts` and :meth:`windows`)."""
        return self.windows(*self.sample_starts(n, rng, weighting, full))

    def window_returns(self, episodes: np.ndarray, starts: np.ndarray, length: int | None = None) -> np.ndarray:
        """Sum of the true rewards of steps ``start .. start + length - 1`` (cut at the episode's end).

        :param episodes: episode indices
        :param starts: start steps
        :param length: steps summed (default: the window K)
        """
        length = self.window if length is None else length
        first = self.episode_starts[episodes] + starts
        last = np.minimum(first + length, self.episode_ends[episodes])
        return self._cumulative_rewards[last] - self._cumulative_rewards[first]

    def foresee_returns(
        self, episodes: np.ndarray, starts: np.ndarray, horizon: int = 200, extrapolate_truncated: bool = True
    ) -> np.ndarray:
        """OPPO's scripted score: the true return of the ``horizon`` steps from the window start.

        Near the end of an episode fewer than ``horizon`` steps remain. Where the episode
        terminated (``terminals``), the missing steps are the absorbing state's and count 0:
        the window really leads to the end of the episode. Where it was cut by a time limit
        or by the end of the data, the episode would have gone on, and a plain sum would
        make every late window look worse than an early one of the same quality; with
        ``extrapolate_truncated`` the sum over the ``n < horizon`` remaining steps is scaled
        by ``horizon / n`` (the remaining steps' mean reward, over the full horizon).

        :param episodes: episode indices
        :param starts: start steps
        :param horizon: steps of true reward summed from the start (OPPO's ``--foresee``: 200)
        :param extrapolate_truncated: scale the truncated sums of non-terminated episodes as above
        """
        episodes, starts = np.asarray(episodes, np.int64), np.asarray(starts, np.int64)
        sums = self.window_returns(episodes, starts, horizon)
        if extrapolate_truncated:
            available = np.minimum(horizon, self.episode_lengths[episodes] - starts)
            scale = np.where(self.episode_terminated[episodes], 1.0, horizon / np.maximum(available, 1))
            sums = sums * scale
        return sums


class RollingHistory:
    """The last K steps of ``n_envs`` episodes, in the left-padded layout of :class:`Windows`.

    Call :meth:`reset` for the envs whose episode starts, :meth:`push` with each new
    observation (the newest step becomes the last position, its action unknown yet,
    held as ``pad_action``), then :meth:`set_last_action` with the chosen action.
    :meth:`as_state` / :meth:`from_state` convert it to and from SB3's ``state``
    (a tuple of arrays returned by ``predict``).

    :param n_envs: number of parallel episodes
    :param window: K, steps kept
    :param obs_dim: observation size
    :param action_dim: action size
    :param pad_observation: value of padded observations
    :param pad_action: value of padded and not yet chosen actions
    """

    def __init__(
        self, n_envs: int, window: int, obs_dim: int, action_dim: int, pad_observation: float = 0.0, pad_action: float = 0.0
    ) -> None:
        self.window = window
        self.pad_observation, self.pad_action = pad_observation, pad_action
        self.observations = np.full((n_envs, window, obs_dim), pad_observation, dtype=np.float32)
        self.actions = np.full((n_envs, window, action_dim), pad_action, dtype=np.float32)
        self.timesteps = np.zeros((n_envs, window), dtype=np.int64)
        self.mask = np.zeros((n_envs, window), dtype=bool)
        #: number of steps taken so far in each episode
        self.step = np.zeros(n_envs, dtype=np.int64)

    def reset(self, envs: np.ndarray) -> None:
        """Forget the history of the envs where ``envs`` (a boolean array or indices) is set."""
        self.observations[envs] = self.pad_observation
        self.actions[envs] = self.pad_action
        self.timesteps[envs] = 0
        self.mask[envs] = False
        self.step[envs] = 0

    def push(self, observations: np.ndarray) -> None:
        """Append the current observation of every env (shape ``(n_envs, obs_dim)``) as the newest step."""
        for array in (self.observations, self.actions, self.timesteps, self.mask):
            array[:, :-1] = array[:, 1:].copy()
        self.observations[:, -1] = observations
        self.actions[:, -1] = self.pad_action
        self.timesteps[:, -1] = self.step
        self.mask[:, -1] = True
        self.step += 1

    def set_last_action(self, actions: np.ndarray) -> None:
        """Record the action chosen at the newest step (shape ``(n_envs, action_dim)``)."""
        self.actions[:, -1] = actions

    def as_state(self) -> tuple[np.ndarray, ...]:
        """The history as SB3's ``state`` tuple (copies)."""
        return (self.observations.copy(), self.actions.copy(), self.timesteps.copy(), self.mask.copy(), self.step.copy())

    @classmethod
    def from_state(
        cls, state: tuple[np.ndarray, ...], pad_observation: float = 0.0, pad_action: float = 0.0
    ) -> RollingHistory:
        """Rebuild a history from :meth:`as_state`'s tuple.

        :param state: the tuple returned by a previous ``predict``
        :param pad_observation: value of padded observations
        :param pad_action: value of padded actions
        """
        if not isinstance(state, tuple) or len(state) != 5:
            raise ValueError("state must be the tuple returned by the previous predict() call (or None at an episode start)")
        observations, actions, timesteps, mask, step = state
        history = cls(
            observations.shape[0], observations.shape[1], observations.shape[2], actions.shape[2], pad_observation, pad_action
        )
        history.observations[:], history.actions[:] = observations, actions
        history.timesteps[:], history.mask[:], history.step[:] = timesteps, mask, step
        return history
