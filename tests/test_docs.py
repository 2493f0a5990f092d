"""The docs are true and self-contained (tests/docs_check.py): every link, path, rule output, module
and example they cite exists, and no merge artefact or stale claim about the demo is left.

Each checker is also run on a small fake doc (or tree) with the defect, so these tests can fail."""

from __future__ import annotations

from pathlib import Path

import docs_check as dc
import pytest
import yaml

ROOT = dc.ROOT


@pytest.fixture(scope="module")
def problems() -> dict[str, list[str]]:
    return dc.all_problems(ROOT)


CHECKS = ("links", "repo_paths", "outputs", "block_format", "dotted", "protocols", "duplicates", "sections",
          "code_examples", "demo_claims", "dated_numbers")


@pytest.mark.parametrize("check", CHECKS)
def test_the_docs_pass(problems: dict[str, list[str]], check: str) -> None:
    found = problems.get(check, [])
    assert not found, "\n".join(found)


def test_the_docs_are_read() -> None:
    paths = dc.doc_paths(ROOT)
    assert {"README.md", "docs/protocols.md", "docs/differences.md", "workflow/report/workflow.rst"} <= set(paths)
    assert len(dc.rule_outputs(ROOT)) > 50 and {"extract", "fig_davis", "index_dataset"} <= dc.rule_names(ROOT)
    assert dc.block_formats(ROOT), "the package names block folders with a format spec (block{b:02d})"


# --------------------------------------------------------------------------- a fake repository

RULES = """\
rule extract:
    input:
        "results/index/{dataset}.csv",
    output:
        dump="results/dumps/{model}/{dataset}.h5",
    log:
        "logs/extract/{model}/{dataset}.log",


rule davis:
    output:
        masks=directory("results/davis/{model}/{dataset}/masks"),
        table="results/davis/{model}/{dataset}.csv",


rule fig_x:
    input:
        "results/x.pdf"
"""

MODULE = """\
X = 1


class Writer:
    def put(self):
        pass


def present():
    pass
"""


def fake_repo(root: Path) -> Path:
    """A tiny repository: docs, a rule file, a config, a package and a Makefile."""
    files = {
        "README.md": "# Fake\n\n## Where results land\n\nSee [docs](docs/a.md).\n",
        "docs/a.md": "# A page\n\n## First part\n\ntext\n\n## Second part (extra)\n\nmore\n",
        "docs/protocols.md": "# Protocols\n\n## Attention analyses\n\nx\n",
        "rules/x.smk": RULES,
        "config.yaml": yaml.safe_dump({
            "models": {"fs": {"arch": "a", "train": {"objective": "fs", "dataset": "demo_train"}},
                       "random": {"arch": "a", "train": {"objective": "random"}}},
            "datasets": {"demo": {"kind": "synthetic"}, "demo_train": {"kind": "synthetic"},
                         "demo_davis": {"kind": "davis"}},
            "analyses": {"davis": {"datasets": ["demo_davis"]}},
        }),
        "configs/study.yaml": yaml.safe_dump({"models": {"dino": {}}, "datasets": {"imagenet50": {}},
                                              "analyses": {"cka": {"datasets": ["imagenet50"]}}}),
        "src/vitscope/__init__.py": "",
        "src/vitscope/mod.py": MODULE,
        "src/vitscope/pkg/__init__.py": "",
        "src/vitscope/pkg/leaf.py": 'def name(b):\n    return f"block{b + 1:02d}"\n',
        "Makefile": "REPORT ?= results/report.zip\n",
        "workflow/report/c.rst": "A caption (``docs/a.md``).\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return fake_repo(tmp_path)


def doc(text: str, path: str = "docs/b.md") -> dc.Doc:
    return dc.Doc(path, text)


def test_the_fake_repository_passes(repo: Path) -> None:
    found = {k: v for k, v in dc.all_problems(repo).items() if v}
    assert not found


# --------------------------------------------------------------------------- links and anchors


def test_a_broken_link_an_unknown_anchor_and_a_file_outside_the_repository_are_reported(repo: Path) -> None:
    text = ("[ok](a.md#second-part-extra) [gone](missing.md) [anchor](a.md#third-part) [here](#nowhere)\n"
            "[outside](../../shared/spec/protocols.md) ![img](img/x.png) [web](https://example.org/x.md)\n")
    found = dc.check_links(doc(text), repo)
    assert len(found) == 5, found
    assert any("missing.md" in p for p in found) and any("#third-part" in p for p in found)
    assert any("#nowhere" in p for p in found) and any("outside the repository" in p for p in found)
    assert any("img/x.png" in p for p in found)


def test_slugs_follow_github() -> None:
    assert dc.slug('Best-layer table ("No single winner")') == "best-layer-table-no-single-winner"
    assert dc.slug("Retrieval (revisited Oxford / Paris)") == "retrieval-revisited-oxford--paris"
    assert dc.slug("k-NN classification (DINO protocol)") == "k-nn-classification-dino-protocol"
    assert dc.slug("`vitscope.cosine`: fixed order") == "vitscopecosine-fixed-order"
    assert dc.anchors("# A\n\n## Out\n\n## Out\n") == {"a", "out", "out-1"}


# --------------------------------------------------------------------------- repository paths


def test_a_cited_path_the_repository_does_not_hold_is_reported(repo: Path) -> None:
    text = ("Code: `src/vitscope/mod.py`, `src/vitscope/features.py`, `rules/*.smk`, `docs/<page>.md`,\n"
            "`workflow/report/{figure}.rst`, tests/test_nothing.py::test_x, `Makefile`, `docs/a.md#first-part`,\n"
            "`docs/a.md#no-such-part`, `configs/{study,other}.yaml`.\n")
    found = dc.check_repo_paths(doc(text), repo)
    assert len(found) == 4, found
    assert {p.split("'")[1] for p in found} == {"src/vitscope/features.py", "tests/test_nothing.py",
                                                "docs/a.md#no-such-part", "configs/{study,other}.yaml"}


# --------------------------------------------------------------------------- rule outputs


def test_an_output_no_rule_writes_is_reported(repo: Path) -> None:
    outputs = dc.rule_outputs(repo)
    good = ("`results/dumps/{model}/{dataset}.h5`, `results/dumps/fs/demo.h5`, `logs/{rule}/...log`,\n"
            "`results/davis/{model}/{dataset}/masks/block{b:02d}/<seq>/00000.png`, `results/report.zip`,\n"
            "`results/dumps/`, `results/davis/{model}/{dataset}.{csv}`.\n")
    assert dc.check_outputs(doc(good), outputs) == []
    bad = "`results/knn/{model}/{dataset}.csv`, `results/dumps/{model}.h5`, logs/knn/x.log, `results/index/x.csv`\n"
    found = dc.check_outputs(doc(bad), outputs)
    assert len(found) == 4, found  # results/index/... is an input, not an output


def test_wildcard_patterns_match_like_paths() -> None:
    t = dc.to_tokens
    assert dc.compatible(t("results/dumps/{model}/{dataset}.h5"), t("results/dumps/fs/demo.h5"))
    assert not dc.compatible(t("results/dumps/{model}/{dataset}.h5"), t("results/dumps/a/b/c.h5"))
    assert dc.compatible(t("results/figures/{figure}/...pdf"), t("results/figures/cka_full/{dataset}/{a}/{b}.pdf"))
    assert not dc.compatible(t("results/x/{a}.csv"), t("results/x/{a}.tsv"))
    assert dc.expand_braces("a.{csv,md}") == ["a.csv", "a.md"]


def test_a_block_folder_without_the_code_format_is_reported(repo: Path) -> None:
    formats = dc.block_formats(repo)
    assert formats == {"02d"}
    old = "`results/davis/{model}/{dataset}.csv`, `results/davis/{model}/{dataset}/masks/block{b}/{seq}/`"
    assert len(dc.check_block_format(doc(old), formats)) == 1
    assert len(dc.check_block_format(doc("`results/davis/m/d/masks/block1/s/`"), formats)) == 1
    assert dc.check_block_format(doc("`results/davis/m/d/masks/block{b:02d}/` and `.../masks/block01/`"),
                                 formats) == []


# --------------------------------------------------------------------------- modules


def test_a_module_or_attribute_that_does_not_exist_is_reported(repo: Path) -> None:
    text = ("`vitscope.mod.present`, `vitscope.mod.Writer.put`, `vitscope.mod.X`, `vitscope.pkg.leaf.name`,\n"
            "`vitscope.pkg`, `vitscope.mod.absent`, `vitscope.mod.Writer.get`, `vitscope.features.cka`.\n")
    found = dc.check_dotted(doc(text), repo / "src")
    assert sorted(p.split("'")[1] for p in found) == ["vitscope.features.cka", "vitscope.mod.Writer.get",
                                                      "vitscope.mod.absent"]


def test_a_module_moved_away_is_reported_until_the_docs_follow(repo: Path) -> None:
    text = "`vitscope.pkg.leaf.name`"
    assert dc.check_dotted(doc(text), repo / "src") == []
    (repo / "src/vitscope/pkg/leaf.py").rename(repo / "src/vitscope/pkg/other.py")
    assert len(dc.check_dotted(doc(text), repo / "src")) == 1


# --------------------------------------------------------------------------- protocols.md


def test_protocols_md_is_cited_only_as_a_link_to_docs_protocols(repo: Path) -> None:
    bad = "Protocol: `protocols.md`, section 3. (protocols.md, section 4) [spec](../shared/spec/protocols.md)\n"
    assert len(dc.check_protocols(doc(bad), repo)) == 3
    good = "Definitions: [protocols.md](protocols.md#attention-analyses), [the spec](protocols.md).\n"
    assert dc.check_protocols(doc(good), repo) == []
    assert dc.check_protocols(doc(good.replace("(protocols.md", "(../docs/protocols.md"), "README.md"), repo)
    rst_bad = "maps (``protocols.md``, section 3)."
    rst_good = "maps (``docs/protocols.md#attention-analyses``)."
    assert len(dc.check_protocols(doc(rst_bad, "workflow/report/x.rst"), repo)) == 1
    assert dc.check_protocols(doc(rst_good, "workflow/report/x.rst"), repo) == []
    # the anchor of such a citation must exist
    assert dc.check_repo_paths(doc(rst_good, "workflow/report/x.rst"), repo) == []
    assert dc.check_repo_paths(doc(rst_good.replace("analyses", "maps"), "workflow/report/x.rst"), repo)


# --------------------------------------------------------------------------- merge artefacts


def test_a_sentence_written_twice_is_reported() -> None:
    # docs/downstream.md before issue 15: two versions of one sentence, and a fragment of another
    text = ("k-NN and retrieval read the dumps' `tokens/cls` (N, L, D), so\n"
            "all blocks are evaluated from one forward pass per image; no model is re-run. SPair\n"
            "keypoint transfer needs every block's dense spatial tokens, which no dump holds.\n"
            "all blocks are evaluated from one forward pass per image; no model is re-run. DAVIS\n"
            "needs every block's spatial tokens.\n\n"
            "The best block is the highest value, the lower block on a tie; NaN never wins.\n\n"
            "| table | The best block is the highest value, the lower block on a tie; NaN never wins. |\n"
            "A short sentence. A short sentence.\n\n"
            "The best block is the highest value, the lower block on a tie; NaN never wins.\n")
    found = dc.check_duplicates(doc(text))
    assert len(found) == 2, found
    assert "all blocks are evaluated" in found[0] and "The best block" in found[1]


def test_a_list_linking_one_page_twice_is_reported() -> None:
    # README's "More" list before issue 15
    text = ("## More\n\n- [docs/demo.md](docs/demo.md): the demo.\n"
            "- [docs/downstream.md](docs/downstream.md): k-NN, retrieval, SPair-71k and the best-layer table.\n"
            "- [docs/downstream.md](docs/downstream.md): k-NN, retrieval, DAVIS and the best-layer table.\n\n"
            "## Other\n\n- [docs/demo.md](docs/demo.md): again, in another list.\n")
    found = dc.check_duplicates(doc(text, "README.md"))
    assert found == ["README.md: one list links docs/downstream.md from two items"]


def test_a_cited_section_that_does_not_exist_is_reported(repo: Path) -> None:
    text = '(``docs/a.md``, "First part"; ``docs/a.md``, "Second\npart"; ``docs/a.md``, "Third part")'
    found = dc.check_quoted_sections(doc(text, "workflow/report/x.rst"), repo)
    assert len(found) == 1 and "Third part" in found[0]


# --------------------------------------------------------------------------- code examples


def test_a_code_example_naming_a_model_the_demo_lacks_is_reported(repo: Path) -> None:
    outputs, rules = dc.rule_outputs(repo), dc.rule_names(repo)
    config = dc.load_config(repo)
    good = ("```bash\n.venv/bin/snakemake --cores all fig_x results/dumps/fs/demo.h5  # a comment\n"
            "snakemake --cores all --configfile configs/study.yaml results/dumps/dino/imagenet50.h5\n"
            "snakemake -n results/davis/random/demo_davis/masks/block01/a/00000.png \\\n    --config models.fs.seed=1\n"
            "```\n\n```python\nh5py.File(\"results/dumps/{model}/demo.h5\")\n```\n")
    assert dc.check_code_examples(doc(good), repo, outputs, rules, config) == []
    bad = ("```bash\nsnakemake --cores all fig_nothing results/dumps/vit_tiny/demo.h5\n"
           "snakemake --config models.vit_tiny.seed=1 --cores 1 fig_x\n"
           "snakemake --cores all --configfile configs/study.yaml results/dumps/fs/imagenet50.h5\n"
           "snakemake results/dumps/fs/demo_nothing.h5\n"
           "snakemake --config models.fs.seed=1 fig_x\n"
           "```\n\n```python\nwith h5py.File(\"results/dumps/vit_tiny/demo.h5\") as f:\n    pass\n```\n")
    found = dc.check_code_examples(doc(bad, "README.md"), repo, outputs, rules, config)
    assert len(found) == 7, found
    assert sum("vit_tiny" in p for p in found) == 3 and any("KEY=VALUE" in p for p in found)
    assert any("fig_nothing" in p for p in found) and any("model 'fs'" in p for p in found)
    assert any("dataset 'demo_nothing'" in p for p in found)


# --------------------------------------------------------------------------- claims about the demo


def test_a_claim_that_the_demo_models_are_random_is_reported(repo: Path) -> None:
    config = dc.load_config(repo)
    stale = ("## The demo\n\nThe demo's models are random, so the numbers only show that the pipeline runs.\n\n"
             "The demo's models are randomly initialised, so the figures show the baseline.\n\n"
             "NMI 0.12-0.20 and ARI 0-0.035 at every block for both random models, i.e. chance.\n")
    assert len(dc.check_demo_claims(doc(stale), config)) == 3
    untrained = {**config, "models": {"random": {"train": {"objective": "random"}}}}
    assert dc.check_demo_claims(doc(stale), untrained) == []


def test_demo_numbers_without_a_date_are_reported() -> None:
    stale = ("# Features\n\n## On the demo\n\nThe demo's object clustering: NMI 0.12-0.20 and ARI 0-0.035 at every\n"
             "block.\n\n## Estimator\n\nb = 8 gives 0.0068.\n")
    found = dc.check_dated_numbers(doc(stale, "docs/features.md"))
    assert len(found) == 1 and "On the demo" in found[0]
    # docs/demo.md before issue 15: the clustering and attention numbers of an older run, undated
    demo = ("# Demo\n\n## The models\n\nbatch 64, lr 1e-3, betas 0.9 / 0.95\n\n## Training\n\nfs 73 s, mae 48 s.\n\n"
            "## What the figures show\n\n**k-NN**: fs 87.5 % (measured on a fresh `make demo`, 2026-12-01).\n\n"
            "**Clustering**: NMI fs 0.95, contrastive 0.44.\n")
    found = dc.check_dated_numbers(doc(demo, "docs/demo.md"))
    assert len(found) == 2 and "Training" in found[0] and "Clustering" in found[1]
