"""cpi.io.atomic_save_figure: figures are byte-for-byte reproducible (no creation dates)."""

from __future__ import annotations

import pytest


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 3, 2], label="a")
    ax.set_xlabel("step")
    ax.legend()
    return fig


@pytest.mark.parametrize("ext", ["png", "pdf", "svg"])
def test_saving_twice_gives_identical_bytes(tmp_path, monkeypatch, ext):
    import matplotlib.pyplot as plt

    from cpi.io import atomic_save_figure

    fig = _figure()
    first = atomic_save_figure(fig, tmp_path / f"a.{ext}").read_bytes()
    # a different wall clock between the two saves (PDF/SVG dates would follow it)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    second = atomic_save_figure(fig, tmp_path / f"b.{ext}").read_bytes()
    plt.close(fig)
    assert first == second
    assert len(first) > 1000
    for volatile in (b"CreationDate", b"Matplotlib v", b"<dc:date>"):
        assert volatile not in first


def test_caller_metadata_is_kept(tmp_path):
    import matplotlib.pyplot as plt

    from cpi.io import atomic_save_figure

    fig = _figure()
    data = atomic_save_figure(fig, tmp_path / "t.pdf", metadata={"Title": "inversion curve"}).read_bytes()
    plt.close(fig)
    assert b"inversion curve" in data and b"CreationDate" not in data
