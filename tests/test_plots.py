"""Learning-curve figures: single evaluations drawn, many algorithms apart, hypervolume named, 150 dpi."""

import matplotlib.image
import numpy as np
import pytest

from benchmarks import plots
from benchmarks.plots import write_curves


def record(algo, seed, steps, kind="online", task="toy/reach-v0"):
    curve = [{"step": s, "return_mean": -50 + s / 100 + seed} for s in steps]
    return {"status": "ok", "task": task, "algo": algo, "seed": seed, "kind": kind, "curve": curve}


@pytest.fixture
def figures(monkeypatch):
    """The figures write_curves makes, kept open for inspection."""
    kept = []
    real_save = plots._save

    def save(fig, path):
        kept.append((path.name, fig.axes[0]))
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return kept


def test_a_curve_of_one_evaluation_is_drawn(tmp_path, figures):
    write_curves(tmp_path, [record("FamO2O", 0, [1000]), record("FamO2O", 1, [1000])])
    ((_, ax),) = figures
    drawn = [line for line in ax.get_lines() if len(line.get_xdata())]
    assert drawn and drawn[0].get_xdata()[0] == 1000 and drawn[0].get_ydata()[0] == pytest.approx(-39.5)
    assert ax.containers, "an error bar shows the spread over seeds"


def test_more_than_ten_algorithms_stay_distinguishable(tmp_path, figures):
    styles = {(plots.style(i)["color"], plots.style(i)["linestyle"]) for i in range(24)}
    assert len(styles) == 24
    write_curves(tmp_path, [record(f"A{i:02d}", 0, [0, 100, 200]) for i in range(12)])
    ((_, ax),) = figures
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 12
    assert len(ax.get_legend().get_texts()) == 12


def test_multi_objective_curves_say_hypervolume_and_figures_are_150_dpi(tmp_path, figures):
    paths = write_curves(tmp_path, [record("CMORL", 0, [0, 100], kind="mo", task="toy/mo-arc-v0")])
    ((_, ax),) = figures
    assert "hypervolume" in ax.get_ylabel()
    image = matplotlib.image.imread(paths[0])
    assert image.shape[1] >= 800, "6 inches at 150 dpi"
    # the title sits inside the image: its top rows are not all background
    assert np.any(image[: image.shape[0] // 10] < 0.9)


def test_long_titles_wrap(tmp_path, figures):
    write_curves(tmp_path, [record("SAC", 0, [0, 100], task="toy/" + "a-very-long-task-name-" * 4)])
    ((_, ax),) = figures
    assert "\n" in ax.get_title()
