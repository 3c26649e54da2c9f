"""The README's code runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_write_your_own_algorithm_example_trains_and_predicts():
    (code,) = python_blocks("Write your own algorithm")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert model.num_timesteps == 4096 and model._n_updates == 4
    action, _ = model.predict(model.env.reset(), deterministic=True)
    assert action.shape == (1, 2)


def test_environments_example_runs():
    (code,) = python_blocks("Environments")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["obs"].shape == (24,)
