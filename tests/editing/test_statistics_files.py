"""Statistics files of the ROME/MEMIT lineage: files written as the reference code writes them import as the C0 we
compute; ours export and import back bit for bit; bad files and unverified downloads are refused in one line."""

import io
import json
from pathlib import Path
from urllib.error import HTTPError

import numpy as np
import pytest
import torch
from conftest import CORPUS

from encore.data.files import file_digests
from encore.editing import statistics_files, statistics_sources
from encore.editing.covariance import (
    load_or_compute_statistics,
    load_statistic,
    sample_documents,
    second_moment_sums,
    statistics_key,
    tensor_sha256,
)
from encore.editing.statistics_files import (
    StatisticsFileError,
    export_statistics,
    layout_path,
    parse_file_name,
    read_statistics_file,
)
from encore.editing.statistics_sources import (
    MEMIT_STATS_URL,
    StatisticsSource,
    import_statistics,
    load_imported,
    statistics_source,
)
from encore.models.architecture import architecture_of, read_weight

DOCUMENTS = [*CORPUS, "London is the capital of England and the United Kingdom."]
LAYERS, MAX_LENGTH, MODEL_DIR, N = [1, 2], 16, "tiny", len(DOCUMENTS)
IDENTITY = {"source": "test", "name": "tiny"}


def reference_file(path, sums: torch.Tensor, count, sample_size, **replace) -> None:
    """np.savez of CombinedStat(mom2=SecondMoment()).state_dict() + sample_size, as util/runningstats.py's
    save_cached_state writes it (python int count, the float32 sum, the constructor string)."""
    state = {"mom2.constructor": "util.runningstats.SecondMoment()", "mom2.count": count,
             "mom2.mom2": sums.cpu().numpy(), "sample_size": sample_size, **replace}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **state)


def reference_files(model, tokenizer, root, n_samples=N, layers=LAYERS):
    """The reference layout for ``model``'s layers, accumulated as our statistics pass does (same order, batches)."""
    documents = sample_documents(DOCUMENTS, n_samples)
    sums, count = second_moment_sums(model, tokenizer, documents, layers, MAX_LENGTH)
    arch, paths = architecture_of(model), {}
    for layer in layers:
        paths[layer] = root / layout_path(MODEL_DIR, "wikipedia", arch.down_proj_name(layer), "float32", n_samples)
        reference_file(paths[layer], sums[layer], count, n_samples)
    return paths


def do_import(model, source, tmp_path, n_samples=N, layers=LAYERS, model_name="tiny"):
    return import_statistics(
        source, model_name=model_name, model_identity=IDENTITY, layers=layers,
        module_of=architecture_of(model).down_proj_name,
        d_ff={layer: read_weight(model, layer).shape[1] for layer in layers},
        n_samples=n_samples, dtype="float32", cache_dir=tmp_path / "cache",
    )  # fmt: skip


def computed(model, tokenizer, tmp_path, n_samples=N):
    paths = load_or_compute_statistics(model, tokenizer, IDENTITY, LAYERS, lambda: DOCUMENTS, "corpus-sha",
                                       n_samples, MAX_LENGTH, tmp_path / "cache")  # fmt: skip
    keys = {layer: statistics_key(IDENTITY, layer, "corpus-sha", n_samples, MAX_LENGTH, "float32") for layer in LAYERS}
    return {layer: {"path": str(paths[layer]), "key": keys[layer]} for layer in LAYERS}


def test_reference_files_import_as_the_c0_computed_here(tiny_model, tokenizer, tmp_path):
    reference_files(tiny_model, tokenizer, tmp_path / "stats")
    entries = do_import(tiny_model, StatisticsSource("local", path=str(tmp_path / "stats")), tmp_path)
    ours = computed(tiny_model, tokenizer, tmp_path)
    for layer in LAYERS:
        imported = load_statistic(entries[layer]["path"], entries[layer]["key"])
        assert torch.equal(imported, load_statistic(ours[layer]["path"], ours[layer]["key"]))
        # its own cache entry, named by its source: never taken for the computed one
        assert entries[layer]["path"] != ours[layer]["path"]
        origin = entries[layer]["key"]["imported"]
        assert origin["source"] == "local" and origin["n_samples"] == len(DOCUMENTS)
        assert (
            origin["file"]
            == f"tiny/wikipedia_stats/{architecture_of(tiny_model).down_proj_name(layer)}_float32_mom2_6.npz"
        )
        assert entries[layer]["imported"]["count"] > 0


def test_compute_export_import_round_trip_is_bitwise(tiny_model, tokenizer, tmp_path):
    ours = computed(tiny_model, tokenizer, tmp_path)
    manifest = {"model": IDENTITY, "layers": {str(layer): entry for layer, entry in ours.items()}}
    written = export_statistics(manifest, tmp_path / "out", model_dir=MODEL_DIR,
                                module_of=architecture_of(tiny_model).down_proj_name)  # fmt: skip
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == [
        layout_path(MODEL_DIR, "wikipedia", architecture_of(tiny_model).down_proj_name(layer), "float32", 6)
        for layer in LAYERS
    ]
    entries = do_import(tiny_model, StatisticsSource("local", path=str(tmp_path / "out")), tmp_path)
    for layer, path in zip(LAYERS, written):
        c0 = load_statistic(ours[layer]["path"], ours[layer]["key"])
        imported = load_statistic(entries[layer]["path"], entries[layer]["key"])
        assert tensor_sha256(imported) == tensor_sha256(c0)
        with np.load(path, allow_pickle=False) as data:  # what the reference loader reads
            assert str(data["mom2.constructor"]) == "util.runningstats.SecondMoment()"
            assert int(data["sample_size"]) == 6
            moment = (torch.from_numpy(data["mom2.mom2"]) / int(data["mom2.count"])).float()
            assert torch.equal(moment, c0)
            assert json.loads(str(data["encore.provenance"]))["key"] == ours[layer]["key"]


@pytest.fixture()
def gpt2_file(tiny_gpt2, tokenizer, tmp_path):
    return reference_files(tiny_gpt2, tokenizer, tmp_path / "stats", layers=[1])[1]


def _rewrite(path, **replace):
    with np.load(path, allow_pickle=False) as data:
        state = {key: data[key] for key in data.files}
    state.update(replace)
    path.unlink()
    np.savez(path, **state)


def _raw(path):
    with np.load(path) as data:
        return data["mom2.mom2"].copy()


def _asymmetric(path):
    raw = _raw(path)
    raw[0, 1] += np.abs(raw).max()
    _rewrite(path, **{"mom2.mom2": raw})


def _nan(path):
    raw = _raw(path)
    raw[3, 3] = np.nan
    _rewrite(path, **{"mom2.mom2": raw})


def _pickled(path):
    raw = _raw(path)
    np.savez(path, **{"mom2.count": 5, "mom2.mom2": np.array(list(raw), dtype=object)})  # allow_pickle in savez


def _truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_module(path):
    path.rename(path.with_name(path.name.replace("transformer.h.1.mlp.c_proj", "model.layers.1.mlp.down_proj")))


BAD_FILES = {
    "wrong shape": (
        lambda p: _rewrite(p, **{"mom2.mom2": _raw(p)[:-1, :-1]}),
        "has shape (255, 255), expected (256, 256)",
    ),
    "asymmetric": (_asymmetric, "is not symmetric"),
    "NaN": (_nan, "non-finite"),
    "zero count": (lambda p: _rewrite(p, **{"mom2.count": np.int64(0)}), "mom2.count is 0, expected a positive"),
    "pickled objects": (_pickled, "holds pickled objects; refused"),
    "truncated": (_truncated, "unreadable"),
    "wrong module": (_wrong_module, "module model.layers.1.mlp.down_proj is not the edited down-projection"),
    "other statistic": (
        lambda p: _rewrite(p, **{"mom2.constructor": "util.runningstats.Mean()"}),
        "not a SecondMoment",
    ),
}


@pytest.mark.parametrize("damage", BAD_FILES, ids=list(BAD_FILES))
def test_a_bad_file_is_refused_in_one_line_naming_it(damage, tiny_gpt2, gpt2_file, tmp_path):
    spoil, expected = BAD_FILES[damage]
    spoil(gpt2_file)
    with pytest.raises(StatisticsFileError) as caught:
        do_import(tiny_gpt2, StatisticsSource("local", path=str(tmp_path / "stats")), tmp_path, layers=[1])
    message = str(caught.value)
    assert "\n" not in message and expected in message
    named = gpt2_file.parent / (
        "model.layers.1.mlp.down_proj_float32_mom2_6.npz" if damage == "wrong module" else gpt2_file.name
    )
    assert message.startswith(f"{named}: ")
    assert not (tmp_path / "cache" / "tiny").exists() or not list((tmp_path / "cache" / "tiny").glob("*.safetensors"))


def test_a_missing_file_names_the_places_tried(tiny_llama, tmp_path):
    with pytest.raises(StatisticsFileError, match=r"model.layers.1.mlp.down_proj_float32_mom2_6.npz: missing$"):
        do_import(tiny_llama, StatisticsSource("local", path=str(tmp_path), model_dir="tiny"), tmp_path, layers=[1])


def test_reference_file_names_and_null_sample_size(tiny_gpt2, gpt2_file):
    assert parse_file_name("transformer.h.17.mlp.c_proj_float32_mom2_100000.npz") == {
        "module": "transformer.h.17.mlp.c_proj", "dtype": "float32", "stats": ["mom2"], "n": 100000}  # fmt: skip
    assert parse_file_name("model.layers.4.mlp.down_proj_float32_mom2_t{batch_tokens}_100000.npz")["n"] == 100000
    assert parse_file_name("model.layers.4.mlp.down_proj_float64_mean-mom2.npz")["stats"] == ["mean", "mom2"]
    assert parse_file_name("weights.npz") is None
    # runningstats writes sample_size None as a NaN-boxed null
    _rewrite(gpt2_file, sample_size=np.array(statistics_files.NULL))
    statistic = read_statistics_file(gpt2_file, module="transformer.h.1.mlp.c_proj", d_ff=256)
    assert statistic.sample_size is None and statistic.count > 0


def _hub_source(tmp_path, sha256):
    return StatisticsSource("hub", repo="someone/memit-stats", model_dir=MODEL_DIR, sha256=sha256)


def test_a_hub_download_is_used_only_with_its_recorded_sha256(tiny_gpt2, gpt2_file, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def download(repo_id, filename, **options):
        calls.append((repo_id, filename, options["revision"], options["repo_type"]))
        return str(gpt2_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    layout = gpt2_file.relative_to(tmp_path / "stats").as_posix()
    digest = file_digests(gpt2_file)[0]
    with pytest.raises(StatisticsFileError, match=f"with sha256 {digest}, but no sha256 is recorded"):
        do_import(tiny_gpt2, _hub_source(tmp_path, {}), tmp_path, layers=[1])
    with pytest.raises(StatisticsFileError, match=f"sha256 {digest} differs from the recorded {'0' * 64}; refused"):
        do_import(tiny_gpt2, _hub_source(tmp_path, {layout: "0" * 64}), tmp_path, layers=[1])
    assert calls[0] == ("someone/memit-stats", layout, "main", "model")
    entries = do_import(tiny_gpt2, _hub_source(tmp_path, {layout: digest}), tmp_path, layers=[1])
    assert entries[1]["key"]["imported"]["file_sha256"] == digest
    assert entries[1]["imported"]["location"] == f"https://huggingface.co/someone/memit-stats/blob/main/{layout}"
    before = len(calls)  # imported once: the recorded digest names the cache entry, nothing is fetched again
    assert do_import(tiny_gpt2, _hub_source(tmp_path, {layout: digest}), tmp_path, layers=[1]) == {
        1: {**entries[1], "imported": {**entries[1]["imported"], "local_file": None}}}  # fmt: skip
    assert len(calls) == before


def test_hub_files_are_found_under_either_reference_name_of_the_model(tiny_gpt2, gpt2_file, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    asked = []

    def download(repo_id, filename, **options):
        asked.append(filename)
        if not filename.startswith("stats/tiny/"):
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(gpt2_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    layout = gpt2_file.relative_to(tmp_path / "stats").as_posix()
    source = StatisticsSource(
        "hub", repo="someone/stats", subfolder="stats", sha256={layout: file_digests(gpt2_file)[0]}
    )
    entries = do_import(tiny_gpt2, source, tmp_path, layers=[1], model_name="someone/tiny")
    assert asked == [
        f"stats/someone_tiny/{layout.partition('/')[2]}",
        f"stats/{layout}",
    ]  # MEMIT's name, then EasyEdit's
    assert entries[1]["key"]["imported"]["file"] == layout


def test_a_url_download_is_verified_by_the_known_files_registry(tiny_gpt2, gpt2_file, tmp_path, monkeypatch):
    layout = gpt2_file.relative_to(tmp_path / "stats").as_posix()
    registry = tmp_path / "known.yaml"
    registry.write_text(f"url: {{{MEMIT_STATS_URL}: {{{layout}: {file_digests(gpt2_file)[0]}}}}}\nhub: {{}}\n")
    monkeypatch.setattr(statistics_sources, "KNOWN_FILES", registry)
    monkeypatch.setattr(statistics_sources, "urlopen", lambda url, timeout: io.BytesIO(gpt2_file.read_bytes()))
    entries = do_import(tiny_gpt2, StatisticsSource("url", model_dir=MODEL_DIR), tmp_path, layers=[1])
    assert entries[1]["key"]["imported"]["file_sha256"] == file_digests(gpt2_file)[0]


def test_a_url_download_is_verified_and_a_bad_one_removed(tiny_gpt2, gpt2_file, tmp_path, monkeypatch):
    served, requested = {"body": gpt2_file.read_bytes()}, []

    def fake_urlopen(url, timeout):
        requested.append(url)
        if served["body"] is None:
            raise HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(served["body"])

    monkeypatch.setattr(statistics_sources, "urlopen", fake_urlopen)
    layout = gpt2_file.relative_to(tmp_path / "stats").as_posix()
    good = file_digests(gpt2_file)[0]
    source = StatisticsSource("url", model_dir=MODEL_DIR, sha256={layout: good})
    served["body"] = gpt2_file.read_bytes()[:-7] + b"garbage"  # a corrupted download
    with pytest.raises(StatisticsFileError, match=r"differs from the recorded .*; refused \(download removed\)"):
        do_import(tiny_gpt2, source, tmp_path, layers=[1])
    assert requested == [f"{MEMIT_STATS_URL}/{layout}"]
    assert not list((tmp_path / "cache" / "downloads").rglob("*.npz"))
    served["body"] = gpt2_file.read_bytes()
    entries = do_import(tiny_gpt2, source, tmp_path, layers=[1])
    assert entries[1]["imported"]["location"] == f"{MEMIT_STATS_URL}/{layout}"
    assert torch.equal(load_imported(entries[1]), read_statistics_file(gpt2_file, module="transformer.h.1.mlp.c_proj",
                                                                       d_ff=256).second_moment)  # fmt: skip
    served["body"] = None
    with pytest.raises(StatisticsFileError, match="transformer.h.1.mlp.c_proj_float32_mom2_6.npz: missing"):
        do_import(tiny_gpt2, StatisticsSource("url", model_dir="other"), tmp_path, layers=[1])


def test_a_spoiled_cache_file_is_imported_again_from_its_source(tiny_gpt2, gpt2_file, tmp_path):
    entry = do_import(tiny_gpt2, StatisticsSource("local", path=str(tmp_path / "stats")), tmp_path, layers=[1])[1]
    expected = load_imported(entry).clone()  # the cache file is memory-mapped; it is spoiled in place below
    cached = Path(entry["path"])
    cached.write_bytes(cached.read_bytes()[:100])
    assert torch.equal(load_imported(entry), expected)
    cached.write_bytes(cached.read_bytes()[:100])
    gpt2_file.unlink()
    with pytest.raises(StatisticsFileError, match="source file is not here to import again; rerun the statistics"):
        load_imported(entry)


def test_the_config_key_selects_the_source():
    assert statistics_source(None) is None and statistics_source({"source": "computed", "path": None}) is None
    source = statistics_source({"source": "url", "url": "https://example.org/stats/", "repo": None, "sha256": {}})
    assert source.url == "https://example.org/stats" and source.dataset == "wikipedia"
    with pytest.raises(ValueError, match="statistics.path"):
        statistics_source({"source": "local"})
    with pytest.raises(ValueError, match="statistics.repo"):
        statistics_source({"source": "hub", "repo": None})


def test_the_export_command_names_files_as_the_reference_code(tiny_llama, tokenizer, tmp_path, capsys):
    from encore.models.loading import model_identity

    model_dir = tmp_path / "Tiny-Llama"
    tiny_llama.save_pretrained(model_dir)
    identity = model_identity(model_dir)
    paths = load_or_compute_statistics(tiny_llama, tokenizer, identity, LAYERS, lambda: DOCUMENTS, "corpus-sha", N,
                                       MAX_LENGTH, tmp_path / "cache")  # fmt: skip
    key = lambda layer: statistics_key(identity, layer, "corpus-sha", N, MAX_LENGTH, "float32")  # noqa: E731
    manifest = {"model": identity, "layers": {str(i): {"path": str(paths[i]), "key": key(i)} for i in LAYERS}}
    (tmp_path / "memit.json").write_text(json.dumps(manifest))
    statistics_files.main(["export", "--manifest", str(tmp_path / "memit.json"), "--out", str(tmp_path / "out")])
    expected = [tmp_path / "out" / f"Tiny-Llama/wikipedia_stats/model.layers.{i}.mlp.down_proj_float32_mom2_6.npz"
                for i in LAYERS]  # fmt: skip
    assert capsys.readouterr().out.split() == [str(path) for path in expected]
    for layer, path in zip(LAYERS, expected):
        statistic = read_statistics_file(path, module=f"model.layers.{layer}.mlp.down_proj", d_ff=96)
        assert torch.equal(statistic.second_moment, load_statistic(paths[layer], key(layer)))


def _imported_workdir(tmp_path):
    """A tiny pipeline working directory whose config imports C0 from reference files; (arguments, {layer: C0})."""
    from pipeline_helpers import TINY_HPARAMS, make_workdir, save_tiny_model

    model_dir = save_tiny_model(tmp_path / "model")  # tiny Llama: d_ff 96
    stats, expected = tmp_path / "stats", {}
    for layer in TINY_HPARAMS["layers"]:  # the reference layout, <model> = the directory's name
        keys = torch.randn(50, 96, generator=torch.Generator().manual_seed(layer))
        module = f"model.layers.{layer}.mlp.down_proj"
        path = stats / layout_path("model", "wikipedia", module, "float32", TINY_HPARAMS["mom2_n_samples"])
        reference_file(path, keys.T @ keys, 50, TINY_HPARAMS["mom2_n_samples"])
        expected[layer] = read_statistics_file(path, module=module, d_ff=96).second_moment
    statistics = {"source": "local", "path": str(stats)}
    return make_workdir(tmp_path / "work", model_dir, tmp_path / "resources", statistics=statistics), expected


def test_a_config_with_the_key_runs_the_statistics_rule_on_imported_files(tmp_path):
    from pipeline_helpers import snakemake

    args, expected = _imported_workdir(tmp_path)
    snakemake(*args, "results/tiny/statistics/memit.json")
    manifest = json.loads((tmp_path / "work/results/tiny/statistics/memit.json").read_text())
    assert manifest["source"]["source"] == "local" and "corpus" not in manifest
    for layer, c0 in expected.items():
        entry = manifest["layers"][str(layer)]
        assert entry["key"]["imported"]["file"].startswith("model/wikipedia_stats/model.layers.")
        assert entry["imported"]["count"] == 50
        assert torch.equal(load_imported(entry), c0)


@pytest.mark.slow
def test_snapshots_edited_with_imported_statistics_record_them(tmp_path):
    from pipeline_helpers import snakemake

    args, _ = _imported_workdir(tmp_path)
    snapshot = "results/tiny/memit/plain/order0/snapshots/edits_00004/manifest.json"
    snakemake(*args, snapshot)
    recorded = json.loads((tmp_path / "work" / snapshot).read_text())["statistics"]
    statistics = json.loads((tmp_path / "work/results/tiny/statistics/memit.json").read_text())["layers"]
    assert recorded == statistics
    assert {entry["imported"]["source"] for entry in recorded.values()} == {"local"}
