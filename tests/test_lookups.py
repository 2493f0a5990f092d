"""Config look-ups of the rule files (vitscope.workflow.lookups) and the fingerprints of what
jobs read (vitscope.workflow.stamps)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vitscope.errors import ConfigError
from vitscope.workflow import lookups, stamps

CONFIG = {
    "models": {"a": {"arch": "test_vit", "weights": "random"}, "b": {"arch": "test_vit", "weights": "checkpoint",
                                                                     "checkpoint": "weights/b.pth"}},
    "datasets": {
        "toy": {"kind": "synthetic", "synthetic": {"davis_sequences": ["s1", "s2"]}},
        "toy_val": {"kind": "imagefolder", "root": "results/synthetic/toy/val"},
        "toy_davis": {"kind": "davis", "root": "results/synthetic/toy/davis"},
        "toy_ret": {"kind": "revisited", "root": "results/synthetic/toy/revisited", "name": "rshapes"},
        "coco": {"kind": "coco", "root": "/data/coco/images", "annotations": "/data/coco/ann.json"},
        "ret": {"kind": "revisited", "root": "/data/revisited", "name": "roxford5k"},
    },
    "analyses": {
        "knn": {"datasets": ["toy_val"]}, "retrieval": {"datasets": ["ret"]}, "davis": {"datasets": ["toy_davis"]},
        "best_layers": {"knn": {"metric": "top1", "k": 20}, "retrieval": {"metric": "mAP", "protocol": "medium"},
                        "spair": {"alpha": 0.1}, "davis": {"measure": "J&F"}},
    },
}


def never(needs) -> None:
    raise AssertionError(f"required {needs}")


def test_generated_paths() -> None:
    assert lookups.generated(CONFIG, "results/synthetic/toy/val") == "results/synthetic/toy"
    assert lookups.generated(CONFIG, "results/synthetic/toy") == "results/synthetic/toy"
    assert lookups.generated(CONFIG, "results/synthetic/nope/val") is None  # not a synthetic dataset
    assert lookups.generated(CONFIG, "/data/coco/images") is None


def test_index_inputs() -> None:
    assert lookups.index_inputs(CONFIG, "toy") == ["results/synthetic/toy"]
    assert lookups.index_inputs(CONFIG, "toy_val") == ["results/synthetic/toy"]
    assert lookups.index_inputs(CONFIG, "toy_ret") == ["results/synthetic/toy"]
    assert lookups.index_inputs(CONFIG, "ret") == ["/data/revisited/roxford5k/gnd_roxford5k.pkl"]
    assert lookups.index_inputs(CONFIG, "coco") == ["/data/coco/ann.json"]


def test_missing_inputs_lists_every_missing_path_but_generated_ones() -> None:
    missing = lookups.missing_inputs(CONFIG)
    keys = [need.key for need in missing]
    assert keys == ["models.b.checkpoint", "datasets.coco.root", "datasets.coco.annotations", "datasets.ret.root",
                    "datasets.ret.root"]
    assert "4 input(s)" not in lookups.missing_message(missing, "/w")
    assert lookups.missing_message(missing, "/w").startswith("5 input(s) of this config do not exist")


def test_davis_sequences() -> None:
    assert lookups.davis_sequences(CONFIG, "toy_davis", never) == ["s1", "s2"]
    config = {**CONFIG, "datasets": {**CONFIG["datasets"], "toy_davis": {**CONFIG["datasets"]["toy_davis"],
                                                                         "sequences": ["s3"]}}}
    with pytest.raises(ConfigError, match="datasets.toy_davis.sequences names s3, not in results/synthetic/toy/davis"):
        lookups.davis_sequences(config, "toy_davis", never)
    config["datasets"]["toy_davis"] = {"kind": "davis", "root": "results/synthetic/toy/elsewhere"}
    with pytest.raises(ConfigError, match="lies in a generated dataset; the generator writes videos to"):
        lookups.davis_sequences(config, "toy_davis", never)


def test_davis_sequences_of_a_missing_copy(tmp_path: Path) -> None:
    config = {**CONFIG, "datasets": {"d": {"kind": "davis", "root": str(tmp_path)}}}
    asked = []
    with pytest.raises(ConfigError, match="so the sequences are unknown; fix root or list datasets.d.sequences"):
        lookups.davis_sequences(config, "d", asked.append)
    assert asked and asked[0][0].key == "datasets.d.root"
    (tmp_path / "ImageSets/2017").mkdir(parents=True)
    (tmp_path / "ImageSets/2017/val.txt").write_text("bear\ncar\n")
    assert lookups.davis_sequences(config, "d", never) == ["bear", "car"]
    assert lookups.davis_sequence_input(config, "d", "car") == [f"{tmp_path}/JPEGImages/480p/car",
                                                               f"{tmp_path}/Annotations/480p/car"]


def test_best_layer_tasks() -> None:
    tasks = lookups.best_layer_tasks(CONFIG)
    assert [t["label"] for t in tasks] == ["toy_val k-NN top-1, k=20", "ret (M) mAP", "toy_davis J&F"]
    assert tasks[0] == {"label": "toy_val k-NN top-1, k=20", "files": ["results/knn/a/toy_val.csv",
                                                                        "results/knn/b/toy_val.csv"],
                        "select": {"metric": "top1", "k": 20}, "scale": 100.0, "digits": 2, "unit": "%",
                        "legend": ()}
    assert {(t["scale"], t["unit"]) for t in tasks} == {(100.0, "%")}  # every column in %
    assert tasks[1]["legend"][0].startswith("(M): the Medium protocol of revisited Oxford and Paris")


def test_a_name_the_config_lacks_lists_the_configured_ones() -> None:
    """A target path naming a model or dataset the config does not have (every wildcard look-up)."""
    with pytest.raises(ConfigError, match=r"no model 'vit_tiny' in the config: the configured models are a, b"):
        lookups.model_entry(CONFIG, "vit_tiny")
    with pytest.raises(ConfigError, match=r"no dataset 'nope' in the config: the configured datasets are toy, "):
        lookups.dataset_entry(CONFIG, "nope")
    for call in (lambda: lookups.checkpoint_file(CONFIG, "vit_tiny"), lambda: lookups.train_index(CONFIG, "vit_tiny"),
                 lambda: lookups.index_inputs(CONFIG, "nope"), lambda: lookups.products(CONFIG, "nope"),
                 lambda: lookups.davis_entry(CONFIG, "nope"),
                 lambda: stamps.Stamps(CONFIG, never).dataset("nope"),
                 lambda: stamps.Stamps(CONFIG, never).indexed_images("nope")):
        with pytest.raises(ConfigError, match="in the config: the configured"):
            call()
    from vitscope.workflow import resources

    with pytest.raises(ConfigError, match="no dataset 'nope'"):
        resources.model_runtime(CONFIG | {"extract": {"device": "cpu"}}, "nope", None, 1)


def test_no_wildcard_look_up_bypasses_the_checked_ones() -> None:
    """config["models"][name] / config["datasets"][name] with a name from a wildcard only through
    lookups.model_entry / dataset_entry (rules/common.smk and the planning modules)."""
    import re

    repo = Path(__file__).resolve().parents[1]
    files = [*(repo / "rules").glob("*.smk"), *(repo / "src/vitscope/workflow" / f for f in
                                               ("lookups.py", "stamps.py", "resources.py"))]
    pattern = re.compile(r"""\[["'](models|datasets)["']\]\[(?!["'])""")
    found = [f"{path.name}:{n}" for path in files for n, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line) and "def _entry" not in line]
    assert found == []


def test_stamps_of_a_folder_change_with_its_images(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        (tmp_path / "images" / cls / "1.png").write_bytes(b"x")
    config = {**CONFIG, "datasets": {**CONFIG["datasets"], "f": {"kind": "imagefolder", "root": "images"}}}
    asked = []
    first = stamps.Stamps(config, asked.append).dataset("f")
    assert first and asked and asked[0][0].key == "datasets.f.root"
    (tmp_path / "images/b/2.png").write_bytes(b"y")
    stamps.fingerprint.forget()  # folder scans are cached per process
    assert stamps.Stamps(config, asked.append).dataset("f") != first
    assert stamps.Stamps(config, never).dataset("toy") == ""  # made by the workflow
    assert stamps.Stamps(config, never).dataset("toy_val") == ""
    assert stamps.Stamps(config, never).indexed_images("f") == ""  # no index yet
    Path("results/index").mkdir(parents=True)
    Path("results/index/f.csv").write_text("path,label\nimages/a/1.png,0\n")
    indexed = stamps.Stamps(config, asked.append).indexed_images("f")
    os.utime("images/a/1.png", ns=(1, 1))
    stamps.fingerprint.forget()
    assert indexed and stamps.Stamps(config, asked.append).indexed_images("f") != indexed


def test_checkpoint_stamp(tmp_path: Path) -> None:
    path = tmp_path / "b.pth"
    path.write_bytes(b"123")
    config = {**CONFIG, "models": {**CONFIG["models"], "b": {**CONFIG["models"]["b"], "checkpoint": str(path)}}}
    asked = []
    st = path.stat()
    assert stamps.Stamps(config, asked.append).checkpoint("b", trained=False) == f"3:{st.st_mtime_ns}"
    assert asked[0][0].key == "models.b.checkpoint"
    assert stamps.Stamps(config, never).checkpoint("b", trained=True) == ""
    assert stamps.Stamps(config, never).checkpoint("a", trained=False) == ""


def test_dataset_entries_and_products() -> None:
    config = {**CONFIG, "extract": {"products": ["tokens", "gram"]}}
    config["datasets"] = {**CONFIG["datasets"], "obj": {**CONFIG["datasets"]["coco"], "products": ["objects"]}}
    assert lookups.products(config, "coco") == ["tokens", "gram"] and lookups.products(config, "obj") == ["objects"]
    assert lookups.object_source(config, "coco") == {} and lookups.object_annotations_input(config, "coco") == []
    assert lookups.object_source(config, "obj") == {"root": "/data/coco/images", "annotations": "/data/coco/ann.json"}
    assert lookups.object_annotations_input(config, "obj") == ["/data/coco/ann.json"]
    assert lookups.revisited_entry(config, "ret") == {"root": "/data/revisited", "name": "roxford5k",
                                                      "crop_queries": True}
    assert lookups.davis_entry(config, "toy_davis") == {"root": "results/synthetic/toy/davis", "resolution": "480p"}


def test_spair_input_requires_a_copy_the_workflow_does_not_make() -> None:
    config = {**CONFIG, "datasets": {"gen": {"kind": "spair", "root": "results/synthetic/toy/spair"},
                                     "real": {"kind": "spair", "root": "/data/SPair-71k", "split": "val"}}}
    config["datasets"]["toy"] = CONFIG["datasets"]["toy"]
    assert lookups.spair_entry(config, "gen") == {"root": "results/synthetic/toy/spair", "split": "test"}
    assert lookups.spair_input(config, "gen", never) == ["results/synthetic/toy"]
    asked = []
    assert lookups.spair_input(config, "real", asked.append) == ["/data/SPair-71k/PairAnnotation/val"]
    assert asked[0][0].key == "datasets.real.root"


def test_settings_of_single_rules() -> None:
    config = {**CONFIG, "analyses": {"davis": {"datasets": ["x"], "radius": 12},
                                     "offset_heads": {"radius": 2, "min_mass": 0.5, "min_shift": 1.0, "min_lift": 2.0,
                                                      "cmap": "x"}}}
    assert lookups.davis_options(config) == {"radius": 12}
    assert lookups.offset_thresholds(config) == {"radius": 2, "min_mass": 0.5, "min_shift": 1.0, "min_lift": 2.0}
    config["models"] = {"t": {"train": {"objective": "fs", "dataset": "toy"}}, "r": {"train": {"objective": "random"}}}
    assert lookups.train_index(config, "t") == ["results/index/toy.csv"] and lookups.train_index(config, "r") == []


def test_shards_and_their_files() -> None:
    config = {"datasets": {"a": {"kind": "imagefolder", "root": "x", "shards": 3, "token_dtype": "float16"},
                           "b": {"kind": "imagefolder", "root": "y"}}}
    assert lookups.shards(config, "a") == 3 and lookups.shards(config, "b") == 1
    assert lookups.sharded_datasets(config) == ["a"]
    assert lookups.shard_files(config, "m", "a") == [f"results/shards/m/a/{k}-of-3.h5" for k in (1, 2, 3)]
    # the index (and its readers) never see how the dumps are extracted
    assert lookups.index_entry(config, "a") == {"kind": "imagefolder", "root": "x"}
    assert lookups.index_entry(config, "b") == config["datasets"]["b"]
