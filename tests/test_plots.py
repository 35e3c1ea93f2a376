"""The shared figures: what a reader sees on the axes."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mmlib import plots  # noqa: E402


def _summary(levels, rows):
    return pd.DataFrame([{"row": r, "level": lv, "accuracy_mean": 0.5 + 0.01 * i + 0.1 * lv, "accuracy_ci": 0.01}
                         for i, r in enumerate(rows) for lv in levels])


def test_curves_draw_lines_over_levels_in_the_given_colours_and_order():
    fig, ax = plt.subplots()
    colors = {"A": "#ff0000", "B": "#0000ff"}
    plots.curves(_summary([0.3, 0.6], ["B", "A"]), "level", "accuracy", "row", ax=ax, colors=colors, order=["A", "B"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["A", "B"]
    lines = [c for c in ax.containers]
    assert [matplotlib.colors.to_hex(c.lines[0].get_color()) for c in lines] == ["#ff0000", "#0000ff"]
    assert list(lines[0].lines[0].get_xdata()) == [0.3, 0.6]
    plt.close(fig)


def test_curves_with_one_level_spread_the_methods_over_the_axis():
    """One level: no line to draw, so the points are not stacked on one x (a panel that was one
    point on a 0.86-0.94 axis): each method has its own labelled position."""
    fig, ax = plt.subplots()
    plots.curves(_summary([0.9], ["A", "B", "C"]), "level", "accuracy", "row", ax=ax)
    xs = [c.lines[0].get_xdata()[0] for c in ax.containers]
    assert xs == [0, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B", "C"]
    assert ax.get_xlabel() == "level = 0.9"
    plt.close(fig)
