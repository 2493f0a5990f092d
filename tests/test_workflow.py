"""Snakemake end to end on a tiny config: outputs, incremental reruns, targets, config errors."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

pytestmark = [pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TINY = {
    "models": {
        # trained in the workflow (rule train, two steps), then loaded like a downloaded checkpoint
        "tiny_a": {"arch": "test_vit", "weights": "checkpoint", "format": "timm", "seed": 0, "image_size": 48,
                   "checkpoint": "results/checkpoints/tiny_a.safetensors",
                   "train": {"objective": "fs", "dataset": "toy", "steps": 2, "batch_size": 4}},
        "tiny_b": {"arch": "test_vit", "weights": "random", "seed": 1, "image_size": [32, 48]},
    },
    "datasets": {
        "toy": {
            "kind": "synthetic",
            "synthetic": {"classes": 2, "per_class": 5, "image_size": 40, "val_per_class": 2,
                          "retrieval_per_class": 3, "retrieval_queries_per_class": 1,
                          "spair_categories": 2, "spair_images_per_category": 3,
                          "davis_sequences": ["clip-a", "clip-b"], "davis_frames": 4, "davis_size": [40, 56]},
        },
        "toy_davis": {"kind": "davis", "root": "results/synthetic/toy/davis"},
        "toy_val": {"kind": "imagefolder", "root": "results/synthetic/toy/val", "products": ["tokens"]},
        "toy_ret": {"kind": "revisited", "root": "results/synthetic/toy/revisited", "name": "rshapes",
                    "products": ["tokens"]},
        "toy_spair": {"kind": "spair", "root": "results/synthetic/toy/spair", "split": "test"},
        "toy_coco": {
            "kind": "coco",
            "root": "results/synthetic/toy/images",
            "annotations": "results/synthetic/toy/annotations.json",
            "products": ["cls_attention", "objects"],
        },
    },
    "extract": {"device": "cpu", "batch_size": 4, "cka_batch_size": 4, "exemplars": 2, "num_workers": 0},
    "analyses": {
        "cls_maps": {"datasets": ["toy"]},
        "attention_distance": {"datasets": ["toy"]},
        "offset_heads": {"datasets": ["toy"]},
        "cls_heads": {"datasets": ["toy"]},
        "saliency": {"datasets": ["toy_coco"]},
        "attention_grids": {"datasets": ["toy"]},
        "cka": {"datasets": ["toy"]},
        "clustering": {"datasets": ["toy"], "n_init": 2},
        "object_clustering": {"datasets": ["toy_coco"], "n_init": 2},
        "knn": {"datasets": ["toy_val"], "train": "toy", "ks": [1, 3, 20]},
        "retrieval": {"datasets": ["toy_ret"]},
        "spair": {"datasets": ["toy_spair"], "pairs_per_category": 2},
        "davis": {"datasets": ["toy_davis"], "short_side": 48},
        "best_layers": {"knn": {"k": 3}},
    },
    "figures": {"dpi": 60},
}


def copy_workflow(dest: Path, config: dict) -> Path:
    for name in ("Snakefile", "rules", "workflow", "src", "profiles", "envs"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing is to be done)."""
    proc = snakemake(workdir, "--dry-run", *args)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M))
    jobs.pop("total", None)
    return {rule: int(n) for rule, n in jobs.items()}


def edit_config(workdir: Path, change) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
def built(tiny_run: Path) -> Path:
    """The TINY workflow, run once per session (tests/conftest.py)."""
    return tiny_run


def test_outputs_exist_and_hold_sane_values(built: Path) -> None:
    for model in TINY["models"]:
        assert (built / f"results/figures/cls_maps/{model}/toy.pdf").stat().st_size > 1000
        assert (built / f"results/figures/cls_maps/{model}/toy.png").stat().st_size > 1000
        with h5py.File(built / f"results/dumps/{model}/toy.h5") as dump:
            assert dump.attrs["model"] == model
            assert dump["images/path"].shape == (10,)
            assert sorted(set(dump["images/label"][...])) == [0, 1]
            distance = dump["attention/distance"][...]
            assert np.all((distance > 0) & (distance < np.sqrt(2)))
            assert dump.attrs["parity_max_abs_diff"] < 1e-4
        maps = np.load(built / f"results/attention/{model}/toy/maps.npz")
        np.testing.assert_allclose(maps["spatial"].sum(axis=(-2, -1)), 1.0, atol=1e-9)
        assert np.all(maps["cls"].sum(axis=(-2, -1)) <= 1 + 1e-6)
    for name in ("toy.pdf", "toy.png", "toy_heads.pdf", "toy_heads.png"):
        assert (built / "results/figures/attention_distance" / name).stat().st_size > 1000
    for model in TINY["models"]:
        with h5py.File(built / f"results/dumps/{model}/toy.h5") as dump:
            blocks, heads, grid = dump.attrs["num_blocks"], dump.attrs["num_heads"], tuple(dump.attrs["grid"])
        aaam = np.load(built / f"results/attention/{model}/toy/aaam.npz")["aaam"]
        assert aaam.shape == (blocks, heads, 2 * grid[0] - 1, 2 * grid[1] - 1)
        np.testing.assert_allclose(aaam.sum(axis=(-2, -1)), 1.0, atol=1e-9)
        for figure in ("aaam", "offsets"):
            for suffix in ("pdf", "png"):
                assert (built / f"results/figures/{figure}/{model}/toy.{suffix}").stat().st_size > 1000
        cls_heads = (built / f"results/attention/{model}/toy/cls_heads.csv").read_text()
        assert cls_heads.count("most concentrated") == cls_heads.count("most diffuse") == 1
    table = (built / "results/tables/offset_heads/toy.csv").read_text().splitlines()
    assert table[0].startswith("model,block,head,cx,cy,offset")
    assert len(table) == 1 + sum(6 * 2 for _ in TINY["models"])  # test_vit: 6 blocks x 2 heads
    for figure in ("offset_heads", "offset_scatter", "cls_heads"):
        for suffix in ("pdf", "png"):
            assert (built / f"results/figures/{figure}/toy.{suffix}").stat().st_size > 1000
    for model in TINY["models"]:
        rows = [r for r in csv.DictReader(open(built / f"results/attention/{model}/toy_coco/saliency_iou.csv"))]
        assert {r["selection"] for r in rows} == {"head", "best_head_once", "per_image_best_head"}
        # 2 x 3 and 3 x 3 token grids: small objects may cover no token half (empty masks, left out)
        assert all(int(r["images"]) + int(r["empty_masks"]) == 10 and int(r["images"]) >= 5 for r in rows)
        assert all(0 <= float(r["iou"]) <= 1 for r in rows)
        grids = sorted(p.name for p in (built / f"results/figures/attention_grids/{model}/toy").glob("*.p*"))
        assert grids == ["0.pdf", "0.png", "9.pdf", "9.png"]
    assert (built / "results/figures/saliency_iou/toy_coco.png").stat().st_size > 1000
    for a, b in (("tiny_a", "tiny_a"), ("tiny_a", "tiny_b"), ("tiny_b", "tiny_b")):
        cka = np.load(built / f"results/cka/toy/{a}/{b}.npz")
        assert cka["norms_all"].shape == (12, 12) and cka["blocks_cls"].shape == (6, 6)
        for suffix in ("pdf", "png"):
            assert (built / f"results/figures/cka_full/toy/{a}/{b}.{suffix}").stat().st_size > 1000
        header = (built / f"results/figures/cka_full/toy/{a}/{b}.csv").read_text().splitlines()[0]
        assert header == "model_a,model_b,points,point_a,point_b,representation,cka,note"
    last = (built / "results/figures/cka_last/toy.csv").read_text().splitlines()
    assert len(last) == 1 + 3 * 3
    assert all(float(row.split(",")[-2]) == pytest.approx(1.0) for row in last[1:] if row.startswith("tiny_a,tiny_a"))
    assert all(row.endswith(",") for row in last[1:])  # every value defined: an empty note
    for metric in ("purity", "nmi", "ari"):
        for suffix in ("pdf", "png"):
            assert (built / f"results/figures/clustering/toy_{metric}.{suffix}").stat().st_size > 1000
        rows = (built / f"results/figures/clustering/toy_{metric}.csv").read_text().splitlines()
        assert rows[0] == "model,block,representation,metric,value,note,chance,images,classes,clusters"
        assert len(rows) == 1 + 2 * 6 * 2  # models x blocks x (cls, spatial)
        for suffix in ("pdf", "png"):
            assert (built / f"results/figures/object_clustering/toy_coco_{metric}.{suffix}").stat().st_size > 1000
        rows = (built / f"results/figures/object_clustering/toy_coco_{metric}.csv").read_text().splitlines()
        assert rows[0] == "model,block,representation,metric,value,note,chance,images,classes,clusters"
        assert len(rows) == 1 + 2 * 6 and all(",object," in row for row in rows[1:])  # models x blocks
    for model in TINY["models"]:
        with h5py.File(built / f"results/dumps/{model}/toy_coco.h5") as dump:
            objects = dump["objects"]
            # one object per image: kept + skipped (empty grid mask) = 10
            assert objects.attrs["objects"] + objects.attrs["skipped_empty"] == 10
            assert objects["features"].shape == (objects.attrs["objects"], 6, 64)
            assert sorted(set(objects["category"][...])) == [1, 2]
    for model in TINY["models"]:
        knn = list(csv.DictReader(open(built / f"results/knn/{model}/toy_val.csv")))
        assert len(knn) == 6 * 3 * 2  # blocks x ks x (top1, top5)
        assert all(0 <= float(r["value"]) <= 1 for r in knn)
        # two classes: top-5 is certain once k >= 2 (it counts min(5, k, classes) classes, DINO: min(5, k))
        assert {r["value"] for r in knn if r["metric"] == "top5" and r["k"] != "1"} == {"1.0"}
        ret = list(csv.DictReader(open(built / f"results/retrieval/{model}/toy_ret.csv")))
        assert len(ret) == 6 * 3 * 4  # blocks x protocols x (mAP, mP@1, mP@5, mP@10)
        assert {r["queries"] for r in ret} == {"cropped"}
        assert all(0 <= float(r["value"]) <= 1 for r in ret)
        assert all(float(r["value"]) > 0 for r in ret if r["metric"] == "mAP")
    for figure in ("knn/toy_val", "retrieval/toy_ret"):
        for suffix in ("pdf", "png"):
            assert (built / f"results/figures/{figure}.{suffix}").stat().st_size > 1000
    for model in TINY["models"]:
        pck = list(csv.DictReader(open(built / f"results/spair/{model}/toy_spair.csv")))
        alphas = ("0.1", "0.05", "0.01")
        assert [(r["block"], r["alpha"]) for r in pck] == [(str(b), a) for b in range(1, 7) for a in alphas]
        assert all(r["metric"] == "PCK" and r["categories"] == "2" and 0 <= float(r["value"]) <= 1 for r in pck)
        per = list(csv.DictReader(open(built / f"results/spair/{model}/toy_spair/categories.csv")))
        assert len(per) == 6 * 3 * 2 and {r["pairs"] for r in per} == {"2"}
        for r in pck:  # fractions, the mean over the categories
            values = [float(c["value"]) for c in per if (c["block"], c["alpha"]) == (r["block"], r["alpha"])]
            assert float(r["value"]) == pytest.approx(np.mean(values))
        pairs = list(csv.DictReader(open(built / f"results/spair/{model}/toy_spair/pairs.csv")))
        assert [p["pair"] for p in pairs] == [
            "000001-circle_solid_00-circle_solid_01:circle_solid",
            "000002-circle_solid_00-circle_solid_02:circle_solid",
            "000007-square_stripes_00-square_stripes_01:square_stripes",
            "000008-square_stripes_00-square_stripes_02:square_stripes",
        ]
        assert {p["selection"] for p in pairs} == {"first 2 in sorted file-name order"}
        assert (built / f"results/benchmarks/spair/{model}/toy_spair.tsv").is_file()
        assert "scored 4 pairs" in (built / f"logs/spair/{model}/toy_spair.log").read_text()
    for suffix in ("pdf", "png"):
        assert (built / f"results/figures/spair/toy_spair.{suffix}").stat().st_size > 1000
    best = list(csv.DictReader(open(built / "results/tables/best_layers.csv")))
    assert [(r["model"], r["task"]) for r in best] == [
        (model, task)
        for model in ("tiny_a", "tiny_b")
        for task in ("toy_val k-NN top-1, k=3", "toy_ret (M) mAP", "toy_spair PCK@0.1", "toy_davis J&F")
    ]
    assert all(1 <= int(b) <= 6 for r in best for b in r["blocks"].split(";"))
    assert all(r["unit"] == "%" and 0 <= float(r["score"]) <= 100 for r in best)  # every column in %
    assert all((r["tie"] == "True") == (";" in r["blocks"]) for r in best)
    for task in {r["task"] for r in best}:  # a best model per column, unless every model scores the same
        column = [r for r in best if r["task"] == task]
        differ = len({f"{float(r['score']):.2f}" for r in column}) > 1
        assert any(r["best_model"] == "True" for r in column) == differ, task
    md = (built / "results/tables/best_layers.md").read_text().splitlines()
    header = "| model | toy_val k-NN top-1, k=3 (%) | toy_ret (M) mAP (%) | toy_spair PCK@0.1 (%) | toy_davis J&F (%) |"
    assert md[0] == header and md[4] == "" and md[5].startswith("- Scores in %")
    assert any(line.startswith("- (M): the Medium protocol") for line in md)
    assert "\\toprule" in (built / "results/tables/best_layers.tex").read_text()
    index = (built / "results/index/toy_ret.csv").read_text().splitlines()
    assert index[0] == "path,label,class,box" and len(index) == 1 + 6 + 2
    for model in TINY["models"]:
        rows = list(csv.DictReader(open(built / f"results/davis/{model}/toy_davis.csv")))
        assert len(rows) == 6 * 7  # blocks x (J&F mean; J, F x mean, recall, decay)
        assert {r["objects"] for r in rows} == {"3"}  # clip-a: 1 object, clip-b: 2
        assert all(0 <= float(r["value"]) <= 1 for r in rows if r["metric"] != "decay")
        for seq, objects in (("clip-a", 1), ("clip-b", 2)):
            per_object = list(csv.DictReader(open(built / f"results/davis/{model}/toy_davis/sequences/{seq}.csv")))
            assert len(per_object) == 6 * objects * 2 * 3 and {r["frames"] for r in per_object} == {"2"}
            for block in (1, 6):
                folder = built / f"results/davis/{model}/toy_davis/masks/block{block:02d}/{seq}"
                assert sorted(p.name for p in folder.iterdir()) == [f"{t:05d}.png" for t in range(4)]
                with Image.open(folder / "00003.png") as mask:
                    assert mask.mode == "P" and mask.size == (56, 40)
                    assert int(np.asarray(mask).max()) <= objects
        assert (built / f"results/benchmarks/davis/{model}/toy_davis/clip-a.tsv").is_file()
    for suffix in ("pdf", "png"):
        assert (built / f"results/figures/davis/toy_davis.{suffix}").stat().st_size > 1000
    for model in TINY["models"]:
        assert (built / f"results/benchmarks/extract/{model}/toy.tsv").is_file()
        assert (built / f"logs/extract/{model}/toy.log").read_text().count("images/s") >= 1


def test_every_figure_has_clean_text(built: Path) -> None:
    """Every PNG of the run (attention grids included) was checked when saved: no text under 7 pt
    at the saved size and no two texts overlapping (vitscope.plots.common.text_problems)."""
    from vitscope.plots.common import png_text_check

    pngs = sorted((built / "results/figures").rglob("*.png"))
    assert len(pngs) > 20
    verdicts = {str(p.relative_to(built)): png_text_check(p) for p in pngs}
    assert {path: v for path, v in verdicts.items() if v != "ok"} == {}


def test_the_run_ends_with_a_summary_of_existing_files(built: Path, tiny_run_output: str) -> None:
    text = tiny_run_output[tiny_run_output.index("vitscope: the run finished."):]
    assert "Figures (" in text and "in results/figures/" in text
    assert "Best-layer table: results/tables/best_layers.md" in text
    assert (built / "results/tables/best_layers.md").read_text().splitlines()[0] in text  # the table itself
    assert "Report: snakemake --report results/report.zip" in text
    for folder in re.findall(r"^  (\w+)/ ", text, flags=re.M):
        assert (built / "results/figures" / folder).is_dir(), folder


def test_a_run_of_one_figure_summarises_just_that_figure(built: Path, tmp_path: Path) -> None:
    work = tmp_path / "wf"
    shutil.copytree(built, work, symlinks=True)
    (work / "results/figures/cls_heads/toy.pdf").unlink()
    text = snakemake(work, "fig_cls_heads").stdout
    assert "Figures (1) in results/figures/" in text and "  cls_heads/ toy.pdf" in text
    assert "cls_maps" not in text and "Best-layer table" not in text
    assert "Report: snakemake fig_cls_heads --report results/report.zip" in text


def test_a_target_naming_an_unknown_model_or_dataset_lists_the_configured_ones(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path, TINY)
    for target, message in (
        ("results/figures/cls_maps/vit_tiny/toy.pdf", "no model 'vit_tiny' in the config: the configured models "
                                                      "are tiny_a, tiny_b"),
        ("results/figures/cls_maps/tiny_a/nope.pdf", "no dataset 'nope' in the config: the configured datasets "
                                                     "are toy, toy_coco, toy_davis"),
    ):
        proc = snakemake(workdir, "--dry-run", target, check=False)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr
        assert "KeyError" not in proc.stdout + proc.stderr


def test_second_dry_run_schedules_nothing(built: Path) -> None:
    assert planned_jobs(built) == {}


def test_figure_parameter_reruns_only_that_figure(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["analyses"]["cls_maps"].update(cmap="viridis"))
    jobs = planned_jobs(workdir)
    assert jobs == {"plot_cls_maps": 2, "all": 1}


def test_detector_threshold_reruns_detection_not_the_aaam(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["analyses"]["offset_heads"].update(min_mass=0.4))
    assert planned_jobs(workdir) == {
        "offset_heads": 2, "offset_heads_table": 1, "plot_offsets": 2, "plot_offset_heads": 1,
        "plot_offset_scatter": 1, "all": 1,
    }
    edit_config(workdir, lambda c: c["analyses"]["offset_heads"].update(min_mass=0.5, offset_cmap="magma"))
    assert planned_jobs(workdir) == {"plot_offsets": 2, "all": 1}


def test_clustering_parameter_reruns_only_clustering(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["analyses"]["clustering"].update(seed=7))
    assert planned_jobs(workdir) == {"clustering": 2, "plot_clustering": 3, "all": 1}
    edit_config(workdir, lambda c: c["analyses"]["clustering"].update(seed=0, n_init=3))
    assert planned_jobs(workdir) == {"clustering": 2, "plot_clustering": 3, "all": 1}
    edit_config(workdir, lambda c: c["analyses"]["clustering"].update(n_init=2))
    edit_config(workdir, lambda c: c["analyses"]["object_clustering"].update(seed=7))
    assert planned_jobs(workdir) == {"object_clustering": 2, "plot_object_clustering": 3, "all": 1}


def test_cka_figure_parameter_reruns_only_cka_figures(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["analyses"]["cka"].update(cmap="magma"))
    assert planned_jobs(workdir) == {"plot_cka_full": 3, "plot_cka_last": 1, "all": 1}
    edit_config(workdir, lambda c: c["analyses"]["cka"].update(cmap="viridis", representations=["all"]))
    assert planned_jobs(workdir) == {"plot_cka_full": 3, "all": 1}


def test_downstream_settings_rerun_only_their_task(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["analyses"]["knn"].update(temperature=0.1))
    assert planned_jobs(workdir) == {"knn": 2, "plot_downstream": 1, "best_layers": 1, "all": 1}
    edit_config(workdir, lambda c: c["analyses"]["knn"].update(temperature=0.07))
    edit_config(workdir, lambda c: c["datasets"]["toy_ret"].update(crop_queries=False))
    assert planned_jobs(workdir) == {
        "index_dataset": 1, "extract": 2, "retrieval": 2, "plot_downstream": 1, "best_layers": 1, "all": 1,
    }
    edit_config(workdir, lambda c: c["datasets"]["toy_ret"].pop("crop_queries"))
    edit_config(workdir, lambda c: c["analyses"]["best_layers"].update(retrieval={"protocol": "hard"}))
    assert planned_jobs(workdir) == {"best_layers": 1, "all": 1}
    edit_config(workdir, lambda c: c["analyses"]["spair"].update(pairs_per_category=None))
    assert planned_jobs(workdir) == {"spair": 2, "plot_downstream": 1, "best_layers": 1, "all": 1}
    edit_config(workdir, lambda c: c["analyses"]["spair"].update(pairs_per_category=2))
    edit_config(workdir, lambda c: c["analyses"]["best_layers"].pop("retrieval"))
    edit_config(workdir, lambda c: c["analyses"]["davis"].update(topk=3))
    assert planned_jobs(workdir) == {
        "davis_sequence": 4, "davis": 2, "plot_downstream": 1, "best_layers": 1, "all": 1,
    }


def test_davis_results_regenerate_alone(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    # the task's results, its figure and the table it feeds: only DAVIS reruns
    for path in ("results/davis", "results/figures/davis"):
        shutil.rmtree(workdir / path)
    for path in (workdir / "results/tables").glob("best_layers.*"):
        path.unlink()
    assert planned_jobs(workdir) == {
        "davis_sequence": 4, "davis": 2, "plot_downstream": 1, "best_layers": 1, "all": 1,
    }


def test_training_parameter_reruns_only_that_models_chain(built: Path, tmp_path: Path) -> None:
    with h5py.File(built / "results/dumps/tiny_a/toy.h5") as dump:
        assert dump.attrs["weights"] == "checkpoint" and len(dump.attrs["weights_sha256"]) == 64
    assert (built / "results/train/tiny_a/loss.csv").read_text().count("\n") == 1 + 2
    assert (built / "results/figures/train/loss.png").stat().st_size > 1000
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["models"]["tiny_a"]["train"].update(lr=0.002))
    jobs = planned_jobs(workdir)
    assert jobs["train"] == 1 and jobs["plot_train_loss"] == 1
    assert jobs["extract"] == 4 and jobs["knn"] == 1 and jobs["clustering"] == 1  # tiny_a's dumps only
    assert jobs["cka_pair"] == 2 and "synthetic_dataset" not in jobs  # (a, a) and (a, b), not (b, b)
    edit_config(workdir, lambda c: c["models"]["tiny_a"].update(checkpoint="weights/tiny_a.pt"))
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0 and "models.tiny_a.checkpoint = 'weights/tiny_a.pt'" in proc.stdout + proc.stderr


def test_extraction_parameter_reextracts(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    edit_config(workdir, lambda c: c["extract"].update(exemplars=3))
    jobs = planned_jobs(workdir)
    assert jobs.get("extract") == 8  # toy, toy_coco, toy_val, toy_ret; two models
    assert "index_dataset" not in jobs and "synthetic_dataset" not in jobs


def test_package_edit_reruns_the_rules_that_use_it(built: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    with open(workdir / "src/vitscope/plots/common.py", "a") as handle:
        handle.write("\n# edited\n")
    assert planned_jobs(workdir) == {
        "plot_cls_maps": 2, "plot_attention_distance": 1, "plot_aaam": 2, "plot_offsets": 2,
        "plot_offset_heads": 1, "plot_offset_scatter": 1, "plot_cls_heads": 1, "plot_saliency_iou": 1,
        "plot_attention_grids": 2, "plot_cka_full": 3, "plot_cka_last": 1, "plot_clustering": 3,
        "plot_object_clustering": 3, "plot_downstream": 4, "plot_train_loss": 1, "all": 1,
    }
    with open(workdir / "src/vitscope/attention/metrics.py", "a") as handle:
        handle.write("\n# edited\n")
    jobs = planned_jobs(workdir)
    assert jobs["extract"] == 8 and jobs["attention_distance"] == 2 and jobs["attention_maps"] == 2
    with open(workdir / "src/vitscope/attention/saliency.py", "a") as handle:
        handle.write("\n# edited\n")
    jobs = planned_jobs(workdir)
    assert jobs["saliency_iou"] == 2 and jobs["plot_saliency_iou"] == 1


def test_code_version_follows_imports(built: Path, tmp_path: Path) -> None:
    """code_version also hashes what the named modules import: extract/fused.py is
    imported by extract/hooks.py, so editing it re-extracts; errors.py shapes messages only,
    so editing it reruns nothing (tests/test_code_version.py checks the named modules)."""
    workdir = tmp_path / "copy"
    shutil.copytree(built, workdir, symlinks=True)
    with open(workdir / "src/vitscope/errors.py", "a") as handle:
        handle.write("\n# edited\n")
    assert planned_jobs(workdir) == {}
    with open(workdir / "src/vitscope/extract/fused.py", "a") as handle:
        handle.write("\n# edited\n")
    jobs = planned_jobs(workdir)
    # DAVIS and SPair run their own forward passes (vitscope.tasks.davis.dense, tasks.spair.run): not rerun
    assert jobs["extract"] == 8 and not {"train", "davis_sequence", "spair"} & set(jobs)


def test_single_figure_target(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path, TINY)
    jobs = planned_jobs(workdir, "fig_attention_distance")
    assert "plot_cls_maps" not in jobs and "attention_maps" not in jobs
    assert jobs["plot_attention_distance"] == 1 and jobs["extract"] == 2
    jobs = planned_jobs(workdir, "fig_cls_heads")
    assert jobs["plot_cls_heads"] == 1 and jobs["cls_heads"] == 2
    assert "aaam" not in jobs and "plot_cls_maps" not in jobs and "offset_heads" not in jobs
    jobs = planned_jobs(workdir, "fig_cka")
    assert jobs["cka_pair"] == 3 and jobs["plot_cka_full"] == 3 and jobs["plot_cka_last"] == 1
    assert "clustering" not in jobs and "attention_maps" not in jobs
    jobs = planned_jobs(workdir, "fig_clustering")
    assert jobs["clustering"] == 2 and jobs["plot_clustering"] == 3 and "cka_pair" not in jobs
    jobs = planned_jobs(workdir, "fig_object_clustering")
    assert jobs["object_clustering"] == 2 and jobs["plot_object_clustering"] == 3 and jobs["extract"] == 2
    assert "clustering" not in jobs and "saliency_iou" not in jobs
    jobs = planned_jobs(workdir, "fig_knn")
    assert jobs["knn"] == 2 and jobs["plot_downstream"] == 1 and "retrieval" not in jobs
    assert jobs["extract"] == 4 and "clustering" not in jobs  # the bank (toy) and the queries, two models
    jobs = planned_jobs(workdir, "fig_retrieval")
    assert jobs["retrieval"] == 2 and jobs["plot_downstream"] == 1 and "knn" not in jobs and jobs["extract"] == 2
    jobs = planned_jobs(workdir, "fig_spair")
    # tiny_a is trained on toy (its index) before SPair and DAVIS can run it
    trained = {"synthetic_dataset": 1, "index_dataset": 1, "train": 1}
    assert jobs == {**trained, "spair": 2, "plot_downstream": 1, "fig_spair": 1}
    jobs = planned_jobs(workdir, "fig_davis")
    assert jobs == {**trained, "davis_sequence": 4, "davis": 2, "plot_downstream": 1, "fig_davis": 1}
    jobs = planned_jobs(workdir, "table_best_layers")
    assert jobs["best_layers"] == 1 and jobs["knn"] == 2 and jobs["retrieval"] == 2 and "plot_downstream" not in jobs
    assert jobs["spair"] == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["extract"].update(batchsize=3), "batchsize"),
        (lambda c: c["models"]["tiny_a"].update(weights="pretrained"), "pretrained"),
        (lambda c: c["models"]["tiny_a"]["train"].update(objective="dino"), "dino"),
        (lambda c: c["models"]["tiny_a"]["train"].update(dataset="toy_ret"), "train.dataset names 'toy_ret' of kind"),
        (lambda c: c["analyses"]["cls_maps"].update(datasets=["nope"]), "analyses.cls_maps.datasets names 'nope'"),
        (lambda c: c["analyses"]["saliency"].update(datasets=["toy"]), "saliency.datasets names 'toy' of kind"),
        (lambda c: c["analyses"]["object_clustering"].update(datasets=["toy"]),
         "object_clustering.datasets names 'toy' of kind"),
        (lambda c: c["datasets"]["toy"].update(products=["tokens", "objects"]), "datasets.toy (kind 'synthetic')"),
        (lambda c: c["datasets"]["toy_coco"].update(products=["cls_attention"]), "do not include 'objects'"),
        (lambda c: c["analyses"]["retrieval"].update(datasets=["toy"]), "retrieval.datasets names 'toy' of kind"),
        (lambda c: c["analyses"]["knn"].update(train="nope"), "analyses.knn.train = 'nope'"),
        (lambda c: c["analyses"]["spair"].update(datasets=["toy"]), "spair.datasets names 'toy' of kind 'synthetic'"),
        (lambda c: c["analyses"]["cls_maps"].update(datasets=["toy_spair"]),
         "analyses.cls_maps.datasets names 'toy_spair' of kind 'spair'"),
        (lambda c: c["analyses"]["best_layers"].update(spair={"alpha": 0.2}), "best_layers.spair.alpha = 0.2"),
        (lambda c: c["datasets"]["toy_spair"].update(root="nowhere"), "nowhere/PairAnnotation/test"),
        (lambda c: c["analyses"]["davis"].update(datasets=["toy"]), "davis needs a dataset of kind 'davis'"),
        (lambda c: c["analyses"]["cls_maps"].update(datasets=["toy_davis"]), "serves analyses.davis only"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path: Path, change, message: str) -> None:
    workdir = copy_workflow(tmp_path, TINY)
    edit_config(workdir, change)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def test_configfile_replaces_the_demo_config(tmp_path: Path) -> None:
    """`--configfile` must not be merged with config.yaml (the demo's models would join a study run)."""
    workdir = copy_workflow(tmp_path, TINY)
    other = {**TINY, "models": {"only_c": TINY["models"]["tiny_b"]}}
    (workdir / "other.yaml").write_text(yaml.safe_dump(other))
    proc = snakemake(workdir, "--dry-run", "--configfile", "other.yaml")
    text = proc.stdout + proc.stderr
    assert "results/dumps/only_c/toy.h5" in text
    assert "tiny_a" not in text and "tiny_b" not in text


def test_jobs_import_the_workflows_own_package(tmp_path: Path) -> None:
    """A job runs the package the code params hash (the workflow's src/), not another installed copy."""
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work", TINY)
    module = work / "src/vitscope/io/synthetic.py"
    marker = tmp_path / "imported_from"
    module.write_text(module.read_text() + f"\n__import__('pathlib').Path({str(marker)!r}).write_text(__file__)\n")
    snakemake(work, "results/synthetic/toy")
    assert Path(marker.read_text()).resolve() == module.resolve()
