import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from companion.viz import COLORS, Interactive, interact, style, use_style
from companion.viz.widgets import WIDGET_MIME, _subsample


def _line(k=1, name="a"):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.arange(10) ** k)
    ax.set_title(f"{name}: k={k}")
    return fig


def test_every_static_combination_is_rendered_once():
    w = interact(_line, {"k": [1, 2, 3], "name": ["a", "b"]})
    assert set(w.frames) == {(k, n) for k in (1, 2, 3) for n in "ab"}
    assert len({bytes(b) for b in w.frames.values()}) == 6  # six different pictures
    assert all(b.startswith(b"\x89PNG") for b in w.frames.values())
    assert plt.get_fignums() == []  # figures are closed, so the inline backend shows none twice


def test_thinning_respects_max_frames_and_keeps_the_ends():
    w = interact(_line, {"k": range(20), "name": ["a", "b"]}, max_frames=10)
    assert len(w.frames) <= 10
    assert w.static["k"][0] == 0 and w.static["k"][-1] == 19 and w.static["name"] == ["a", "b"]
    assert w.controls["k"] == list(range(20))  # a live kernel still offers every value


def test_subsample_is_even_and_includes_both_ends():
    assert _subsample(list(range(11)), 3) == [0, 5, 10]
    assert _subsample(list(range(4)), 10) == [0, 1, 2, 3]
    assert _subsample(list(range(4)), 1) == [0]


def test_explicit_static_values_and_initial_value():
    w = interact(_line, {"k": range(10)}, static={"k": [2, 7]}, initial={"k": 7})
    assert list(w.frames) == [(2,), (7,)]
    html = w.to_html()
    assert 'value="1"' in html  # the slider starts on the second static value, k=7


def test_a_failing_function_fails_loudly_naming_the_values():
    def draw(k):
        if k == 3:
            raise ZeroDivisionError("boom")
        return _line(k)

    with pytest.raises(RuntimeError, match=r"draw\(k=3\) raised ZeroDivisionError: boom"):
        interact(draw, {"k": range(5)})


def test_function_must_return_a_figure():
    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        interact(lambda k: None, {"k": [1, 2]})


def test_axes_are_accepted():
    w = interact(lambda k: _line(k).axes[0], {"k": [1, 2]})
    assert len(w.frames) == 2


def test_page_weight_is_bounded():
    with pytest.raises(ValueError, match="over max_bytes"):
        interact(_line, {"k": [1, 2, 3]}, max_bytes=1000)


@pytest.mark.parametrize(
    "controls,kwargs,match",
    [
        ({}, {}, "non-empty mapping"),
        ({"k": []}, {}, "has no values"),
        ({"k": "abc"}, {}, "sequence of values"),
        ({"not valid": [1]}, {}, "identifiers"),
        ({"k": [1, 2]}, {"max_frames": 0}, "max_frames"),
        ({"k": [1, 2]}, {"static": {"j": [1]}}, "unknown controls"),
        ({"k": [1, 2]}, {"static": {"k": [3]}}, "subset"),
        ({"k": [1, 2]}, {"initial": {"k": 5}}, "initial value"),
        ({"k": [1, 2, 3], "name": ["a", "b"]}, {"static": {"k": [1, 2, 3], "name": ["a", "b"]}, "max_frames": 4}, "more than max_frames"),
    ],
)
def test_bad_controls_are_rejected_clearly(controls, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        interact(_line, controls, **kwargs)


def test_static_player_holds_every_frame_and_a_control_per_name():
    w = interact(_line, {"k": [1, 2, 3], "name": ["a", "b"]}, title="demo")
    html = w.to_html()
    frames = re.search(r"var frames = (\[.*?\])", html).group(1)
    assert frames.count('"') == 2 * 6
    assert html.count('type="range"') == 1 and html.count("<select") == 1
    assert "demo" in html and "<script>" in html


def test_mimebundle_outside_a_kernel_is_html_only():
    bundle = interact(_line, {"k": [1, 2]})._repr_mimebundle_()
    assert "text/html" in bundle and WIDGET_MIME not in bundle


def test_live_widget_recomputes_values_that_were_not_prerendered():
    calls = []

    def draw(k):
        calls.append(k)
        return _line(k)

    w = interact(draw, {"k": range(6)}, static={"k": [0, 5]})
    box = w.widget()
    slider = next(c for c in box.children if hasattr(c, "options"))
    image = box.children[-1]
    before = image.value
    slider.value = 3  # not pre-rendered: must call draw again
    assert calls[-1] == 3 and image.value != before
    slider.value = 5  # pre-rendered: served from the frames
    assert calls.count(5) == 1 and image.value == w.frames[(5,)]


def test_style_is_colour_blind_safe_palette():
    import matplotlib as mpl

    with style():
        assert mpl.rcParams["axes.prop_cycle"].by_key()["color"][:3] == [COLORS["blue"], COLORS["orange"], COLORS["green"]]
    use_style()
    assert mpl.rcParams["axes.spines.top"] is False


def test_a_control_with_one_static_value_is_a_label_not_a_slider():
    w = interact(lambda k, n: _line(k + n), {"k": [1, 2, 3], "n": range(10)}, static={"n": [4]})
    html = w.to_html()
    assert html.count('type="range"') == 1  # k moves; n is fixed in the static page
    assert '<span class="cw-fixed" style="font-family:monospace">4</span>' in html
    assert "9 more values in a live kernel" in html
    one = interact(_line, {"k": [7]}).to_html()
    assert 'type="range"' not in one and "<select" not in one and "more value" not in one


def test_the_build_switch_leaves_only_the_static_player(monkeypatch):
    import IPython

    import companion.viz.widgets as widgets

    monkeypatch.setattr(IPython, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    assert widgets._in_live_kernel()
    monkeypatch.setenv("COMPANION_LIVE_WIDGETS", "0")
    assert not widgets._in_live_kernel()
    assert WIDGET_MIME not in interact(_line, {"k": [1, 2]})._repr_mimebundle_()
