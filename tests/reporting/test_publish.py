"""Published studies (docs/results/<study>/) regenerate from their CSVs: the same tables and results page, every figure drawn."""

import shutil
from pathlib import Path

import pytest

from encore.reporting.publish import regenerate

REPO = Path(__file__).resolve().parents[2]
# every published study: its data/metrics.csv, plain or gzip-compressed once large (encore.reporting.data_files)
STUDIES = sorted({path.parent.parent for path in (REPO / "docs" / "results").glob("*/data/metrics.csv*")})


@pytest.mark.parametrize("study", STUDIES, ids=lambda path: path.name)
def test_published_csvs_regenerate_the_published_tables_results_and_figures(study, tmp_path):
    copy = tmp_path / study.name
    shutil.copytree(study / "data", copy / "data")
    if (study / "notes.md").exists():
        shutil.copyfile(study / "notes.md", copy / "notes.md")
    regenerate(copy)
    published = sorted(p.relative_to(study) for p in (study / "tables").glob("*.md"))
    assert published, "a published study has tables"
    for name in [*published, Path("results.md"), Path("index.md")]:
        assert (copy / name).read_text() == (study / name).read_text(), name
    figures = sorted(p.name for p in (study / "figures").glob("*.png"))
    assert figures == sorted(p.name for p in (copy / "figures").glob("*.png"))
    assert all((copy / "figures" / name).stat().st_size > 10_000 for name in figures)


def test_there_is_a_published_study():
    assert STUDIES, "docs/results/<study>/data/metrics.csv: publish a study with python -m encore.reporting.publish"
