"""experiments/controlled/figures.py: the step axis follows the checkpoint schedule."""

import matplotlib

matplotlib.use("Agg")


def test_step_axis_is_linear_for_even_checkpoints_and_log_for_a_log_schedule():
    import matplotlib.pyplot as plt

    from experiments.controlled.figures import step_axis

    fig, (even, logged) = plt.subplots(1, 2)
    step_axis(even, [0, 9, 18, 27, 36])
    assert even.get_xscale() == "linear"
    step_axis(logged, [0, 9, 18, 36, 72, 144, 288, 288])
    assert logged.get_xscale() == "symlog"
    assert list(logged.get_xticks()) == [0, 9, 18, 36, 72, 144, 288]  # every checkpoint, the base included
    plt.close(fig)


def test_sweep_figure_of_a_long_run_draws_every_checkpoint_on_a_log_axis():
    import pandas as pd

    from experiments.controlled.figures import plot_sweep

    steps = [0, 9, 18, 36, 72, 144, 288]
    rows = [{"condition": c, "metric": "mean_m_c", "step": s, "mean": 0.8, "lo": 0.7, "hi": 0.9, "n": 96,
             "interval": "bootstrap"} for c in ("fall_band", "control") for s in steps]
    fig = plot_sweep(pd.DataFrame(rows), metric="mean_m_c")
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog" and len(ax.lines) == 2
    assert list(ax.lines[0].get_xdata()) == steps
