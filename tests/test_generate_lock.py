"""Two processes asking for the same local dataset at once: one generates it, the other reuses it."""

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from rlkit.data import load_dataset

SETTINGS = {"size": 400, "train_steps": 300, "learning_starts": 50, "eval_freq": 50, "progress_bar": False}


def generate_in_process(store: str) -> tuple[dict[str, str], float]:
    os.environ["MINARI_DATASETS_PATH"] = store
    import time

    from rlkit.data.generate import generate

    start = time.perf_counter()
    ids = generate("toy/reach-v0", ["medium", "medium-replay"], **SETTINGS)
    return ids, time.perf_counter() - start


def test_concurrent_generation_is_serialised_and_not_corrupted(tmp_path, monkeypatch):
    store = str(tmp_path / "datasets")
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(generate_in_process, [store, store]))
    assert results[0][0] == results[1][0]
    monkeypatch.setenv("MINARI_DATASETS_PATH", store)
    medium = load_dataset(results[0][0]["medium"])
    assert len(medium) == 400
    assert len(load_dataset(results[0][0]["medium-replay"])) > 0
    # without the lock the second writer fails: "A Minari dataset with ID ... already exists"


def test_interrupted_write_is_regenerated(tmp_path, monkeypatch):
    store = str(tmp_path / "datasets")
    ids, _ = generate_in_process(store)
    # a write killed before rlkit's metadata was stored: minari's files exist, the settings do not
    metadata = tmp_path / "datasets" / "rlkit" / "toy-reach-v0" / "medium-v0" / "data" / "metadata.json"
    metadata.write_text("{")
    monkeypatch.setenv("MINARI_DATASETS_PATH", store)
    again, _ = generate_in_process(store)
    assert again == ids and len(load_dataset(ids["medium"])) == 400
