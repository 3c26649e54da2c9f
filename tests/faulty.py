"""An algorithm that dies once mid-run, to test retries and checkpoint resume (imported by Ray workers too)."""

import os
from pathlib import Path

from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from rlkit import BC


class _DieOnce(BaseCallback):
    def __init__(self, marker: Path, at_step: int, mode: str) -> None:
        super().__init__()
        self.marker, self.at_step, self.mode = marker, at_step, mode

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at_step and not self.marker.exists():
            self.marker.write_text(str(self.num_timesteps))
            if self.mode == "exit":
                os._exit(1)  # the worker process dies without cleanup, as when killed
            raise KeyboardInterrupt  # the process is being stopped
        return True


class DieOnce:
    """Mixin: the process dies the first time it reaches ``die_at_step`` (``die_marker`` records that it did)."""

    def __init__(self, policy, env, die_marker: str = "", die_at_step: int = 0, die_mode: str = "exit", **kwargs):
        self.die_marker, self.die_at_step, self.die_mode = die_marker, die_at_step, die_mode
        super().__init__(policy, env, **kwargs)

    def learn(self, total_timesteps, callback=None, **kwargs):
        die = _DieOnce(Path(self.die_marker), self.die_at_step, self.die_mode)
        return super().learn(total_timesteps, callback=CallbackList([callback, die]), **kwargs)


class DieOnceSAC(DieOnce, SAC):
    pass


class DieOncePPO(DieOnce, PPO):
    pass


class DieOnceBC(DieOnce, BC):
    pass
