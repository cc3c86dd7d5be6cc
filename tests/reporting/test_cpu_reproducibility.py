"""One run made on two CPUs (encore.reporting.cpu_reproducibility): paired differences new − first over the same
facts, only where both makings evaluated a snapshot, and the committed page equal to what the command regenerates."""

from pathlib import Path

import pandas as pd
from conftest import make_study

from encore.reporting.cpu_reproducibility import CSV, DIFFERENCE, FIRST_DIRECTORY, PAGE, compare, write

REPO = Path(__file__).resolve().parents[2]


def test_two_equal_makings_differ_by_nothing_and_a_changed_fact_by_its_share(tmp_path):
    make_study(tmp_path / "study", "bf16-mixed", snapshots=(100, 200, 300))
    make_study(tmp_path / "study" / FIRST_DIRECTORY, "bf16-mixed", snapshots=(100, 200))  # set aside at 200 edits
    table = compare(tmp_path / "study")
    differences = table[table["making"] == DIFFERENCE]
    assert sorted(set(differences["edits"])) == [100, 200]  # 300: only the new making has it
    assert (differences["value"].abs() < 1e-12).all()

    def flip_first_fact(run, edits, frame):
        frame = frame.copy()
        frame.loc[frame.index[0], "es"] = 1.0 - frame["es"].iloc[0]  # one of 12 facts: ES moves by 100/12
        return frame

    make_study(tmp_path / "other", "bf16-mixed", snapshots=(100,), shift=flip_first_fact)
    make_study(tmp_path / "other" / FIRST_DIRECTORY, "bf16-mixed", snapshots=(100,))
    es = compare(tmp_path / "other").query("metric == 'ES' and making == @DIFFERENCE")["value"]
    assert all(abs(abs(value) - 100 / 12) < 1e-9 for value in es)


def test_a_study_without_a_first_directory_gets_no_page(tmp_path):
    make_study(tmp_path / "study", "bf16-mixed")
    assert write(tmp_path / "study") == []


def test_the_committed_page_is_what_the_command_regenerates():
    study = REPO / "docs" / "results" / "lifelong-cpu"
    assert (study / FIRST_DIRECTORY / "data").is_dir()  # the lifelong-cpu study was made again on a second CPU
    committed = {name: (study / name).read_text() for name in (CSV, PAGE)}
    try:
        write(study)
        assert {name: (study / name).read_text() for name in (CSV, PAGE)} == committed, (
            "rerun python -m encore.reporting.cpu_reproducibility docs/results/lifelong-cpu"
        )
    finally:
        for name, text in committed.items():
            (study / name).write_text(text)
    assert not pd.read_csv(study / CSV).empty
