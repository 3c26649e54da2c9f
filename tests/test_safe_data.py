"""Safe datasets are checked when generated: their costs must bind, each cost level is its own agent.

What each test guards:
- ``test_data_that_never_costs_fails_and_writes_nothing``: the check that a share of episodes lies on each
  side of the cost limit (removing it, or comparing with ``>=`` on the wrong side, lets an all-safe dataset
  through, the failure that made BC-All and BC-Safe identical);
- ``test_each_cost_level_trains_its_own_agent``: levels with their own seeds (one shared seed gives the same
  agent twice when costs never bind);
- ``test_costs_read_back_equal_those_written``: the costs stored in the Minari dataset and its card;
- ``test_levels_with_one_behaviour_fail``: the check that the cost levels differ.
"""

import json

import numpy as np
import pytest
import torch as th

from rlkit.data import load_dataset
from rlkit.data.generate import GenerateConfig
from rlkit.data.minari import local_dataset_id
from rlkit.data.safe import LEVEL_SEED_STRIDE, _train_penalised, check_card, cost_card, generate_safe

#: tiny budgets: each cost level's SAC trains for 400 steps
TOY = dict(size=800, train_steps=400, learning_starts=100, eval_freq=100, n_eval_episodes=2, progress_bar=False)


@pytest.fixture
def minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


def test_data_that_never_costs_fails_and_writes_nothing(minari_store):
    with pytest.raises(ValueError, match=r"only 0% of \d+ episodes exceed cost_limit 1000 \(.*Nothing was written\.") as info:
        generate_safe("toy/hazard-v0", ["expert"], cost_penalties=[0.0, 5.0], cost_limit=1000.0, **TOY)
    assert "cost-seeking" in str(info.value)  # the message names a fix
    with pytest.raises(ValueError, match=r"not found|generate"):
        load_dataset(local_dataset_id("toy/hazard-v0", "safe-expert"))


def test_costs_read_back_equal_those_written(minari_store):
    ids = generate_safe("toy/hazard-v0", ["expert"], cost_penalties=[0.0, 5.0], cost_limit=2.0, min_share=0.1, **TOY)
    dataset = load_dataset(ids["expert"])
    starts = np.concatenate([[0], dataset.episode_ends[:-1]])
    costs = np.add.reduceat(dataset.costs.astype(np.float64), starts)
    card = json.loads(dataset.metadata["cost_card"])
    assert card["episodes"] == len(costs)
    assert card["share_above_limit"] == pytest.approx(np.mean(costs > 2.0))
    assert sum(card["histogram"]["counts"]) == len(costs)
    assert dataset.metadata["episode_cost_mean"] == pytest.approx(costs.mean())
    per_level = [lv["episode_cost_mean"] * lv["episodes"] for lv in card["levels"]]
    assert sum(per_level) == pytest.approx(costs.sum())
    assert [lv["seed"] for lv in card["levels"]] == [0, LEVEL_SEED_STRIDE]
    trained = [json.loads(p.read_text())["settings"]["seed"] for p in (minari_store / ".rlkit-agents").glob("*/training.json")]
    assert sorted(trained) == [0, LEVEL_SEED_STRIDE], "each cost level's agent trains with its own seed"


def test_each_cost_level_trains_its_own_agent(minari_store):
    config = GenerateConfig(env_id="toy/hazard-v0", kinds=["expert"], **TOY)
    first = _train_penalised(GenerateConfig(**{**config.__dict__, "seed": 0}), 0.0)
    second = _train_penalised(GenerateConfig(**{**config.__dict__, "seed": LEVEL_SEED_STRIDE}), 0.0)
    a, b = first.snapshots[-1]["state_dict"], second.snapshots[-1]["state_dict"]
    assert any(not th.equal(a[key], b[key]) for key in a), "two seeds must give two agents"


def _card(costs: list[float], levels: list[int], limit: float = 1.0) -> dict:
    return cost_card(np.array(costs), np.array(levels), [0.0, 1.0], [0, LEVEL_SEED_STRIDE], limit)


def test_check_needs_a_share_on_each_side_of_the_limit():
    check_card(_card([0.0, 0.0, 2.0, 2.0], [0, 0, 1, 1]), 0.2, "d")  # half on each side, levels differ: passes
    with pytest.raises(ValueError, match="exceed cost_limit 1"):
        check_card(_card([0.0, 0.0, 0.0, 0.5], [0, 1, 0, 1]), 0.2, "d")
    with pytest.raises(ValueError, match="stay within cost_limit 1"):
        check_card(_card([3.0, 3.0, 3.0, 0.5], [0, 1, 0, 1]), 0.3, "d")
    card = _card([1.0, 1.0, 2.0, 2.0], [0, 1, 0, 1])
    assert card["share_within_limit"] == card["share_above_limit"] == 0.5  # a cost equal to the limit is within it


def test_levels_with_one_behaviour_fail():
    with pytest.raises(ValueError, match="every cost level has the same mean episode cost"):
        check_card(_card([0.0, 2.0, 0.0, 2.0], [0, 0, 1, 1]), 0.2, "d")
