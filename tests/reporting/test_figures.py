"""Figures that neither hide nor duplicate (issue 18): one y-axis per comparison, norms as growth from the
unedited value, titles naming paper figure, model, data set and edit count, no two images alike, per-editor
figures only with their runs, captions naming only runs that exist, and results.md showing the headline."""

from __future__ import annotations

import hashlib
import re

import pandas as pd
import pytest

from encore.reporting.figures import HEADLINE, all_figures
from encore.reporting.outputs import ALL_EIGHT, LABELS, Index
from encore.reporting.paper_tables import build_paper_outputs
from encore.reporting.publish import embed_figures

MODEL = "smollm2-135m"
SNAPSHOTS = (500, 1000, 1500)
EDITED = (1, 2)
TWO = [("memit", "plain"), ("memit", "mpes_nc")]  # the study as published today: MEMIT and ENCORE
NINE = [*ALL_EIGHT, ("emmet", "nc")]  # the paper's nine runs
PER_EDITOR = {
    "fig08-10_activation_share_editors",
    "fig11-13_activation_share_norm_constraint",
    "fig15-19_layer_norms_editors",
    "fig16-20_layer_norms_norm_constraint",
}
TASKS = ("sst2", "mrpc", "nli", "rte", "cola", "mmlu")


def _rate(runs, run) -> float:
    """Per-run growth rate of the edited layers' norms: every run grows differently (MEMIT the most)."""
    return 1e-4 * (len(runs) - runs.index(run))


def _study(tmp_path, runs, model=MODEL):
    """Collected CSVs of a study with ``runs``: editing scores, per-layer analysis and downstream F1 at every
    snapshot, norms after every batch of 500 from edits 0, a ledger and runs.csv."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = []

    def add(method, variant, edits, metric, value, protocol):
        rows.append(dict(method=method, variant=variant, order=0, edits=edits, metric=metric, value=value,
                         protocol=protocol))  # fmt: skip

    for method, variant, edits in [("unedited", "unedited", 0)] + [(*run, e) for run in runs for e in SNAPSHOTS]:
        rate = 0.0 if method == "unedited" else _rate(runs, (method, variant))
        subset = "to-be-edited" if method == "unedited" else "edited-so-far"
        for metric, value in (("ES", 90.0), ("PS", 80.0), ("NS", 70.0), ("S", 79.0), ("n_records", 4), ("p_new", 0.5)):
            add(method, variant, edits, metric, value - 1000 * rate, f"counterfact/{subset}/nll-comparison")
        add(method, variant, edits, "GE", 600.0, "generation/x")
        if method == "unedited":
            add(method, variant, 0, "p_true_known", 0.3, "table1/to-be-edited/known-true-facts")
        for layer in range(4):
            grown = 1 + rate * edits if layer in EDITED else 1.0
            add(method, variant, edits, f"down_proj_norm.L{layer:02d}", 100.0 * grown, "analysis/down-proj/all")
            for component, share in (("residual", 0.6 - 100 * rate), ("attention", 0.2), ("mlp", 0.2 + 100 * rate)):
                add(method, variant, edits, f"activation_share.L{layer:02d}.{component}", share, "analysis/share/p")
        protocol = "downstream/generate-3-tokens/weighted-f1-invalid-wrong"
        for task in TASKS:
            add(method, variant, edits, f"{task}.f1", 0.5 - rate * edits / 10, protocol)
        add(method, variant, edits, "average.f1", 100 * (0.5 - rate * edits / 10), protocol)
    metrics = pd.DataFrame(rows)
    metrics.insert(0, "dataset", "counterfact")
    metrics.insert(0, "model", model)
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    pd.DataFrame(
        [
            dict(
                method=m,
                variant=v,
                order=0,
                edits=e,
                batch=e // 500,
                layer=layer,
                frobenius_norm=100.0 * (1 + _rate(runs, (m, v)) * e * (layer / 2)),
            )
            for m, v in runs
            for e in (0, *SNAPSHOTS)
            for layer in EDITED
        ]  # fmt: skip
    ).to_csv(tmp_path / "norms.csv", index=False)
    pd.DataFrame(
        [
            dict(
                method=m,
                variant=v,
                order=0,
                case_id=i,
                position=i,
                batch=i // 2,
                iterations=10,
                targets_s=2.0,
                keys_s=1.0,
                solve_s=0.5,
            )
            for m, v in runs
            for i in range(4)
        ]  # fmt: skip
    ).to_csv(tmp_path / "ledger.csv", index=False)
    pd.DataFrame(
        [
            dict(
                method=m,
                variant=v,
                order=0,
                edits=SNAPSHOTS[-1],
                model=model,
                layers=" ".join(map(str, EDITED)),
                lambda_p=5000,
                lambda_n=10 if "nc" in v else 0,
                mpes=2 if "mpes" in v else None,
                mpes_rule="all",
                v_num_grad_steps=20,
                v_lr=0.5,
            )
            for m, v in runs
        ]  # fmt: skip
    ).to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path


def _draw(tmp_path, runs):
    """paper_outputs on a constructed study: ({name: Figure}, Index, figures directory)."""
    collected = _study(tmp_path, runs)
    index = build_paper_outputs(collected, tmp_path / "tables", tmp_path / "figures", tmp_path / "index.md", "t")
    return index.figures, index, tmp_path / "figures"


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return _draw(tmp_path_factory.mktemp("two"), TWO)


@pytest.fixture(scope="module")
def nine(tmp_path_factory):
    return _draw(tmp_path_factory.mktemp("nine"), NINE)


@pytest.fixture(params=["two", "nine"])
def drawn(request):
    return request.getfixturevalue(request.param)


def _data_axes(figure):
    return [axis for axis in figure.axes if axis.get_visible()]


def _texts(figure) -> list[str]:
    """Every title, legend entry and legend title of a figure."""
    texts = [figure._suptitle.get_text()] if figure._suptitle else []
    legends = [*figure.legends, *(axis.get_legend() for axis in figure.axes if axis.get_legend())]
    for axis in _data_axes(figure):
        texts.append(axis.get_title())
    for legend in legends:
        texts += [text.get_text() for text in legend.get_texts()] + [legend.get_title().get_text()]
    return texts


def _runs_named(text: str) -> set:
    """The runs a text names, by label (MEMIT is not named by 'MEMIT+MPES') or as method/variant."""
    named = set()
    for run, name in LABELS.items():
        if re.search(rf"(?<![\w+]){re.escape(name)}(?![\w+])", text) or f"{run[0]}/{run[1]}" in text:
            named.add(run)
    return named


def test_no_two_images_from_paper_outputs_are_alike(drawn):
    figures, index, directory = drawn
    pngs = sorted(directory.glob("*.png"))
    assert len(pngs) == sum(".png" in files for files, _ in index.made) == len(figures) >= 9
    digests = {hashlib.sha256(path.read_bytes()).hexdigest(): path.name for path in pngs}
    assert len(digests) == len(pngs), "two figure files are byte-identical"
    panels = {name: tuple(axis.get_title() for axis in _data_axes(figure)) + (figure.axes[0].get_ylabel(),)
              for name, figure in figures.items()}  # fmt: skip
    assert len(set(panels.values())) == len(panels), "two figures draw the same panels"


def test_per_editor_figures_are_drawn_only_with_their_runs(two, nine):
    figures, index, _ = two
    assert not PER_EDITOR & set(figures)
    missing = dict(index.missing)
    assert "of the run emmet/plain (without it, it would repeat fig04_layer_norms)" in missing[
        "fig15-19_layer_norms_editors"]  # fmt: skip
    assert "of the run memit/nc" in missing["fig11-13_activation_share_norm_constraint"]
    assert "fig03_downstream_mpes" not in figures  # no MPES run: fig03 would be fig06's MEMIT line
    figures = nine[0]
    assert PER_EDITOR | {"fig03_downstream_mpes", "fig14_downstream_tasks_emmet_nc"} <= set(figures)
    titles = [axis.get_title() for axis in _data_axes(figures["fig16-20_layer_norms_norm_constraint"])]
    assert titles == ["MEMIT", "MEMIT+NC", "ENCORE"]


def _assert_names_only(figures, index, runs):
    for name, figure in figures.items():
        for text in _texts(figure):
            assert _runs_named(text) <= set(runs), f"{name}: {text!r} names a run not made"
    for files, caption in [(files, caption) for files, caption in index.made if ".png" in files]:
        assert _runs_named(caption) <= set(runs), f"{files}: {caption!r} names a run not made"


def test_captions_titles_and_legends_name_only_runs_that_exist(two, nine, tmp_path):
    figures, index, _ = two
    _assert_names_only(figures, index, TWO)
    captions = dict(index.made)
    assert captions["fig05_activation_share.png, fig05_activation_share.pdf"].endswith("Runs: MEMIT, ENCORE.")
    assert _runs_named(figures["fig23_downstream_tasks_memit_encore"]._suptitle.get_text()) == set(TWO)
    _assert_names_only(*nine[:2], NINE)
    alone = all_figures(_study(tmp_path, [("memit", "plain")]), tmp_path / "figures", index := Index())
    _assert_names_only(alone, index, [("memit", "plain")])
    assert "norm_growth_all_runs" not in alone  # one run: nothing to compare


def test_figures_comparing_runs_share_one_y_axis_from_zero_growth(drawn):
    figures = drawn[0]
    for name, figure in figures.items():
        axes = _data_axes(figure)
        assert len({axis.get_ylim() for axis in axes}) == 1, name
        assert all(axes[0].get_shared_y_axes().joined(axes[0], axis) for axis in axes[1:]), name
    growth = [figures[name] for name in ("fig01_norm_growth", "fig07b_norm_growth_encore", "norm_growth_all_runs")]
    layers = [figures[name] for name in ("fig04_layer_norms", "fig07a_layer_norms_encore")]
    for group in (growth, layers):  # one y-range for a kind across the study's images, with 0 growth inside it
        (low, high), *others = {figure.axes[0].get_ylim() for figure in group}
        assert not others and low < 0 < high


def test_norms_are_drawn_as_growth_from_the_unedited_value(two):
    figures = two[0]
    summary = figures["norm_growth_all_runs"].axes[0]
    final = {line.get_label().split(":")[0]: line.get_ydata()[-1] for line in summary.get_lines()
             if not line.get_label().startswith("_")}  # fmt: skip
    # layer l of a run grows by rate * edits * l / 2: the mean over layers 1 and 2 is 100 * rate * 1500 * 0.75 %
    assert final == pytest.approx({"MEMIT": 100 * 2e-4 * 1500 * 0.75, "ENCORE": 100 * 1e-4 * 1500 * 0.75})
    memit = figures["fig04_layer_norms"].axes[0]
    last = next(line for line in memit.get_lines() if line.get_label() == "1,500 edits")
    assert list(last.get_ydata()) == pytest.approx([0.0, 30.0, 30.0, 0.0])  # 100 * 2e-4 * 1500 on layers 1, 2


def test_titles_name_paper_figure_model_data_set_and_edit_count(drawn):
    for name, figure in drawn[0].items():
        title = figure._suptitle.get_text()
        assert re.match(r"paper Figs?\. \d", title), f"{name}: {title!r}"
        if name != "fig02_schematic":  # a diagram: no model, data set or edits
            assert MODEL in title and "CounterFact" in title and "1,500 edits" in title, f"{name}: {title!r}"


def test_the_activation_share_legend_covers_no_bar(two):
    figure = two[0]["fig05_activation_share"]
    figure.canvas.draw()
    assert all(axis.get_legend() is None for axis in figure.axes)
    (legend,) = figure.legends
    box = legend.get_window_extent()
    assert not any(box.overlaps(axis.get_window_extent()) for axis in _data_axes(figure))


def test_a_run_without_its_unedited_norm_is_a_one_line_error(tmp_path):
    collected = _study(tmp_path, TWO)
    norms = pd.read_csv(collected / "norms.csv")
    norms[~((norms["variant"] == "plain") & (norms["edits"] == 0))].to_csv(collected / "norms.csv", index=False)
    with pytest.raises(ValueError, match=r"norms.csv: memit/plain layer 1 has no row at edits 0.*collect"):
        all_figures(collected, tmp_path / "figures", Index())


def test_results_page_embeds_the_headline_figures_before_the_notes(two, tmp_path):
    index, directory = two[1], two[2]
    (tmp_path / "notes.md").write_text("## Notes\n\nhand-written\n")
    results = directory.parent / "results.md"
    results.write_text("# Results\n\n## Claims\n\n| a |\n\n## Notes\n\nhand-written\n")
    embed_figures(results, index, notes=tmp_path / "notes.md")
    text = results.read_text()
    links = re.findall(r"!\[[^]]+\]\((figures/[^)]+\.png)\)", text)
    assert links[0] == "figures/norm_growth_all_runs.png" and len(links) >= 5
    assert [link[8:-4] for link in links] == [name for name in HEADLINE if f"figures/{name}.png" in text]
    assert all((results.parent / link).is_file() for link in links)
    assert text.index("## Claims") < text.index("## Figures") < text.index("## Notes") and text.count("## Notes") == 1


RECT, PRUNE = ("memit_rect", "plain"), ("memit_prune", "plain")
REGULARISER_FIGURES = {
    "fig04_layer_norms_regularisers",
    "fig05_activation_share_regularisers",
    "fig06_downstream_regularisers",
    "fig23_downstream_tasks_regularisers",
}


@pytest.fixture(scope="module")
def regularisers(tmp_path_factory):
    """MEMIT, ENCORE, MEMIT+RECT and MEMIT+PRUNE, with PRUNE's rows equal to MEMIT's (PRUNE before it acts)."""
    path = tmp_path_factory.mktemp("regularisers")
    runs = [*TWO, RECT, PRUNE]
    collected = _study(path, runs)
    for name in ("metrics.csv", "norms.csv"):
        frame = pd.read_csv(collected / name)
        prune = (frame["method"] == "memit_prune") & (frame["variant"] == "plain")
        memit = frame[(frame["method"] == "memit") & (frame["variant"] == "plain")].assign(method="memit_prune")
        pd.concat([frame[~prune], memit]).to_csv(collected / name, index=False)
    index = build_paper_outputs(collected, path / "tables", path / "figures", path / "index.md", "t")
    return index.figures, index, path / "figures"


def test_regulariser_runs_get_figures_of_their_own_and_no_paper_figure_is_repeated(two, regularisers):
    figures, index, _ = regularisers
    assert REGULARISER_FIGURES <= set(figures)
    for name in REGULARISER_FIGURES:
        titles = " ".join(axis.get_title() for axis in _data_axes(figures[name]))
        assert "MEMIT+RECT" in titles or name == "fig06_downstream_regularisers", name
        assert {RECT, PRUNE} <= _runs_named(figures[name]._suptitle.get_text()), name
    _assert_names_only(figures, index, [*TWO, RECT, PRUNE])
    figures, index, _ = two  # without RECT or PRUNE they would repeat the MEMIT and ENCORE figures
    assert not REGULARISER_FIGURES & set(figures)
    assert "memit_rect/plain or memit_prune/plain" in dict(index.missing)["fig06_downstream_regularisers"]


def test_a_run_with_the_same_data_as_another_is_drawn_dashed_and_named_on_the_figure(regularisers):
    figures, index, _ = regularisers
    summary = figures["norm_growth_all_runs"].axes[0]
    prune = next(line for line in summary.get_lines() if line.get_label().startswith("MEMIT+PRUNE"))
    assert "(= MEMIT, dashed)" in prune.get_label() and prune.get_linestyle() == "--"
    memit = next(line for line in summary.get_lines() if line.get_label().startswith("MEMIT:"))
    assert list(memit.get_ydata()) == pytest.approx(list(prune.get_ydata()))  # the line it would hide
    titles = [axis.get_title() for axis in _data_axes(figures["norm_growth_all_runs"])]
    assert "MEMIT+PRUNE: each edited layer (identical to MEMIT)" in titles
    assert not any("RECT" in title and "identical" in title for title in titles)  # RECT differs
    captions = {files.split(", ")[0]: caption for files, caption in index.made}
    assert "Identical data: MEMIT+PRUNE equals MEMIT, drawn dashed over it." in captions["norm_growth_all_runs.png"]
    average = figures["fig06_downstream_regularisers"].axes[0]
    assert any(line.get_linestyle() == "--" and "(= MEMIT" in line.get_label() for line in average.get_lines())


def test_a_title_wider_than_its_figure_is_wrapped(regularisers):
    figure = regularisers[0]["fig06_downstream_regularisers"]
    lines = figure._suptitle.get_text().split("\n")
    assert len(lines) >= 3 and all(len(line) <= figure.get_figwidth() * 11 for line in lines)
