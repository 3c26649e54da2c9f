"""Every Python block of the README runs as written, in seconds, and shows what it says."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str | None = None) -> list[str]:
    """The Python blocks of one section (``## <section>``), or of the whole README."""
    text = README.read_text()
    if section is not None:
        text = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """One Minari store for the module: the blocks that generate the toy dataset share it."""
    return tmp_path_factory.mktemp("minari")


def run_block(code: str, monkeypatch, datasets: Path, capsys) -> tuple[dict, str]:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace, capsys.readouterr().out


def test_every_python_block_is_tested():
    tested = ["Environments", "Datasets", "Write your own algorithm", "Behaviour customisation (AlignDiff)"]
    families = "Offline-to-online, safe, multi-objective and preference-based RL"
    assert len(python_blocks()) == sum(len(python_blocks(s)) for s in tested) + len(python_blocks(families)) == 9


def test_environments_example_runs():
    (code,) = python_blocks("Environments")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["obs"].shape == (24,)


def test_datasets_example_learns_from_the_generated_dataset(monkeypatch, datasets, capsys):
    (code,) = python_blocks("Datasets")
    namespace, out = run_block(code, monkeypatch, datasets, capsys)
    assert namespace["dataset"].dataset_id == "rlkit/toy-reach-v0/medium-v0"
    assert namespace["result"]["normalized_score"] > 20, "TD3+BC comes near the medium policy (about 33), far from random (0)"
    assert out.startswith("normalised score ")


FAMILY_BLOCKS = python_blocks("Offline-to-online, safe, multi-objective and preference-based RL")


def test_offline_to_online_example_improves_online(monkeypatch, datasets, capsys):
    namespace, out = run_block(FAMILY_BLOCKS[0], monkeypatch, datasets, capsys)
    assert namespace["online"] > namespace["offline"] + 10, out
    assert "after the online phase" in out


def test_safe_example_stays_safe(monkeypatch, datasets, capsys):
    namespace, out = run_block(FAMILY_BLOCKS[1], monkeypatch, datasets, capsys)
    # the straight line to the goal crosses the hazard for about 6 cost per episode
    assert namespace["result"]["cost_mean"] < 1.0, out


def test_multi_objective_example_finds_a_front(monkeypatch, datasets, capsys):
    namespace, out = run_block(FAMILY_BLOCKS[2], monkeypatch, datasets, capsys)
    assert len(namespace["archive"]) >= 2 and namespace["action"].shape == (2,)
    assert "policies on the front, hypervolume" in out


def test_preference_example_queries_its_teacher(monkeypatch, datasets, capsys):
    """The pre-training phases (200 + 300 steps) end well inside learn(1000): the teacher answers queries."""
    namespace, out = run_block(FAMILY_BLOCKS[3], monkeypatch, datasets, capsys)
    info = namespace["model"].progress_info()
    assert info["queries"] >= 40 and info["labelled"] > 0, out


def test_snapshot_example_trains_from_teacher_states(monkeypatch, datasets, capsys):
    namespace, out = run_block(FAMILY_BLOCKS[4], monkeypatch, datasets, capsys)
    env = namespace["env"]
    assert len(namespace["snapshots"]) == 50 and env.num_steps == 1000 and not env.in_snapshot_phase
    assert "50 snapshots" in out


def test_write_your_own_algorithm_example_trains_and_learns(monkeypatch, datasets, capsys):
    (code,) = python_blocks("Write your own algorithm")
    namespace, out = run_block(code, monkeypatch, datasets, capsys)
    model = namespace["model"]
    assert model.num_timesteps == 8192 and model._n_updates == 16
    action, _ = model.predict(model.env.reset(), deterministic=True)
    assert action.shape == (1, 2)
    # 16 full-batch steps take it most of the way from the random policy (-52.6) to the expert (-5.1)
    assert namespace["result"]["return_mean"] > -30, out


def test_aligndiff_example_plans_for_its_target(monkeypatch, datasets, capsys):
    (code,) = python_blocks("Behaviour customisation (AlignDiff)")
    namespace, out = run_block(code, monkeypatch, datasets, capsys)
    assert "['speed', 'east'] (2,)" in out
    model = namespace["model"]
    assert model.num_timesteps == 100 and model.attributes_ready
    assert abs(namespace["action"]).max() <= 1
