import os

import pytest
import torch as th

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Small networks run fastest on one thread, and results do not depend on the core count."""
    th.set_num_threads(1)
