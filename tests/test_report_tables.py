"""Report inputs refuse bad files by name; aggregation, tables and figures from a synthetic results tree."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from optrepro.report.aggregate import collect_runs
from optrepro.report.ambiguity import load_ambiguity, parse_ambiguity
from optrepro.report.claims import check_published_refs, load_all_claims, load_claims, parse_claims
from optrepro.report.figures import arm_comparison, new_figure, pyplot, stamp
from optrepro.report.published import load_published, load_published_file
from optrepro.report.tables import ambiguity_table, arm_rows, arm_table, latex_table, verdict_table
from optrepro.report.validation import PAPER_DIR, InputError
from optrepro.report.verdicts import judge_all

CLAIM = {"id": "x-claim", "paper": "core", "statement": "m beats b",
         "quantity": {"metric": "accuracy", "split": "test", "value": "final", "aggregation": "mean", "points": True},
         "arms": {"method": "m", "baseline": "b"}, "direction": "greater", "delta_star": 0.01, "cells": ["digits_mlp"],
         "family": "core", "every_cell": False, "min_seeds": 3}


def claims_doc(**claim_changes):
    claim = copy.deepcopy(CLAIM)
    claim.update(claim_changes)
    return {"families": {"core": {"correction": "holm"}}, "claims": [claim]}


# --- paper/claims/<paper>.yaml ---------------------------------------------------------------------------------------------

def test_committed_claims_file_is_valid_and_holds_the_core_digits_claim():
    claims = load_claims(PAPER_DIR / "claims" / "core.yaml")
    core = claims.get("core-digits-adam-gt-sgd")
    assert (core.paper, core.method, core.baseline, core.direction) == ("core", "adam", "sgd", "greater")
    assert core.quantity.column == "final.test.accuracy" and core.cells == ("digits_mlp",)
    check_published_refs(claims, load_published())


@pytest.mark.parametrize("change, message", [
    ({"quantiti": 1}, "unknown key 'quantiti'. Valid keys: arms, baseline_check"),
    ({"min_seeds": "five"}, r"claims\[0\] \(id 'x-claim'\).min_seeds: 'five' is not of type 'integer'"),
    ({"min_seeds": 2}, "min_seeds: 2 is less than the minimum of 3"),
    ({"quantity": {**CLAIM["quantity"], "value": "last"}}, "quantity.value: unknown value 'last'. "
                                                           "Valid choices: at_best_valid, best, final, max, smoothed"),
    ({"direction": "up"}, "direction: unknown value 'up'. Valid choices"),
    ({"family": "other"}, "family 'other' is not declared under 'families'. Declared families: core"),
    ({"up_to_cell": "cifar10"}, "up_to_cell 'cifar10' is not one of its cells: digits_mlp"),
    ({"arms": {"method": "m", "baseline": "m"}}, "both 'm'"),
    ({"baseline_check": {"tolerance": 0.01}}, "baseline_check needs published.baseline"),
    ({"delta_star": 0}, "delta_star: 0 is less than or equal to the minimum of 0"),
])
def test_claims_validation_names_the_bad_key_or_value(change, message):
    with pytest.raises(InputError, match=message):
        parse_claims(claims_doc(**change))


def test_claims_refuse_duplicates_and_unknown_published_rows(tmp_path):
    doc = claims_doc()
    doc["claims"].append(copy.deepcopy(CLAIM))
    with pytest.raises(InputError, match="duplicate claim id 'x-claim'"):
        parse_claims(doc)
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump(claims_doc(published={"baseline": "Nope"}, baseline_check={"tolerance": 0.01})))
    with pytest.raises(InputError, match="published.baseline 'Nope' has no row"):
        check_published_refs(load_claims(path), load_published())


def test_a_claims_file_holds_one_papers_claims_and_its_own_families(tmp_path):
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(claims_doc()))  # its claim says paper: core
    with pytest.raises(InputError, match="claim 'x-claim' has paper 'core'.*one paper, its name \\('other'\\)"):
        load_claims(tmp_path / "other.yaml")
    (tmp_path / "other.yaml").unlink()
    (tmp_path / "core.yaml").write_text(yaml.safe_dump(claims_doc()))
    second = claims_doc(id="y-claim", paper="toy")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(second))  # declares family 'core' again
    with pytest.raises(InputError, match="family 'core' is already declared in .*core.yaml"):
        load_all_claims(tmp_path)
    second["families"] = {"toy": {"correction": "holm"}}
    second["claims"][0]["family"] = "toy"
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(second))
    both = load_all_claims(tmp_path)
    assert [c.id for c in both] == ["x-claim", "y-claim"] and set(both.families) == {"core", "toy"}
    assert [c.id for c in load_all_claims(tmp_path, papers=["toy"])] == ["y-claim"]


# --- published CSV ------------------------------------------------------------------------------------------

GOOD_ROW = "core,x-claim,digits_mlp,b,accuracy,test,final,mean,0.9,0.01,5,our note,paper,\n"
HEADER = "paper,claim_id,cell,arm,metric,split,statistic,aggregation,value,sd,n,source,tier,note\n"


@pytest.mark.parametrize("text, message", [
    (HEADER.replace("tier", "tiers") + GOOD_ROW, "unknown column 'tiers'"),
    (HEADER.replace(",note", "") + GOOD_ROW[:-2] + "\n", "missing column 'note'"),
    (HEADER + GOOD_ROW.replace(",paper,", ",papr,"), r"core.csv:2: column 'tier': unknown value 'papr'. Did you "
                                                     r"mean 'paper'\? Valid choices: authors-output, follow-up, paper, "
                                                     r"summary"),
    (HEADER + GOOD_ROW.replace("0.9", "high"), "column 'value': 'high' is not a number"),
    (HEADER + GOOD_ROW.replace(",5,", ",5.5,"), "column 'n': '5.5' is not an integer"),
    (HEADER + GOOD_ROW.replace(",final,", ",last,"), "column 'statistic': unknown value 'last'"),
    (HEADER + GOOD_ROW.replace(",mean,", ",single,"), "aggregation 'single' with n = 5"),
    (HEADER + GOOD_ROW + GOOD_ROW, "core.csv:3: duplicate of line 2"),
    (HEADER + GOOD_ROW.replace("core,", "caadam,", 1), "'caadam' differs from the file name 'core'"),
    (HEADER + GOOD_ROW.replace("our note", ""), "column 'source' is empty"),
])
def test_published_csv_validation_names_the_bad_value(tmp_path, text, message):
    path = tmp_path / "core.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_published_file(path)


def test_committed_published_files_are_valid():
    frame = load_published()
    assert set(frame["tier"]) <= {"paper", "authors-output", "follow-up", "summary"}
    assert (frame[frame["paper"] == "caadam"]["n"] == 30).all()


# --- ambiguity register -------------------------------------------------------------------------------------

ENTRY = {"id": "name-collision", "point": "Keras keys counts by short name", "reading": "as run: 50% of c_min",
         "alternative": "as described", "source": "remigenet/CaAdam@ce14f7e caadam/caadam.py", "ablation": "caadam_as_described"}


@pytest.mark.parametrize("entry, message", [
    ({k: v for k, v in ENTRY.items() if k != "reading"}, r"\[0\] \(id 'name-collision'\): 'reading' is a required"),
    ({**ENTRY, "effects": "x"}, "unknown key 'effects'. Valid keys: ablation, alternative, id, point, reading, source"),
    ({**ENTRY, "ablation": 3}, "ablation: 3 is not of type 'string', 'null'"),
    ({**ENTRY, "id": "Bad Id"}, "id: 'Bad Id' does not match"),
])
def test_ambiguity_validation_names_the_bad_key(entry, message):
    with pytest.raises(InputError, match=message):
        parse_ambiguity([entry], "test.yaml")


def test_ambiguity_register_renders_with_escaping_and_the_scale(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump([ENTRY, {**ENTRY, "id": "second", "ablation": None}]))
    entries = load_ambiguity(path)
    with pytest.raises(InputError, match="duplicate id 'second'"):
        parse_ambiguity(entries + [entries[1]], "x")
    tex = ambiguity_table(entries, "smoke", caption="CaAdam ambiguity register", label="tab:amb",
                          effects={"name-collision": "+1.2 pp"})
    # wrapped columns may break long tokens after _ / . (an \allowbreak{}), never inside an escape
    assert r"50\% of c\_\allowbreak{}min" in tex and r"caadam\_\allowbreak{}as\_\allowbreak{}described" in tex
    assert "none" in tex
    assert r"\toprule" in tex and "[smoke scale]" in tex and "+1.2 pp" in tex
    with pytest.raises(KeyError, match="unknown ambiguity id 'nope'"):
        ambiguity_table(entries, "smoke", caption="c", label="l", effects={"nope": "x"})


# --- tables ---------------------------------------------------------------------------------------------

def test_latex_table_is_booktabs_escaped_and_stamped():
    frame = pd.DataFrame({"params_M": [1.5, 2.25], "acc %": [0.9, 0.95]})
    tex = latex_table(frame, caption="Sizes & accuracies", label="tab:x", scale="full")
    assert r"params\_M" in tex and r"acc \%" in tex and r"Sizes \& accuracies [full scale]" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    tex = latex_table(pd.DataFrame({"γ": ["S ≤ 1 ± γ"]}), caption="c", label="l", scale="full")
    assert r"S $\leq$ 1 $\pm$ $\gamma$" in tex and "$\\gamma$ \\\\" in tex
    with pytest.raises(ValueError, match="smoke-scale table may not print the verdict 'replicated'"):
        latex_table(pd.DataFrame({"verdict": ["replicated"]}), caption="c", label="l", scale="smoke")
    with pytest.raises(KeyError, match="unknown scale 'tiny'"):
        latex_table(frame, caption="c", label="l", scale="tiny")


# --- a synthetic results tree ------------------------------------------------------------------------

def write_run(root: Path, scale: str, run_id: str, arm: str, seed: int, acc: float, status: str = "ok",
              evals=(0.5, 0.7, 0.8)) -> dict:
    run_dir = root / "results" / scale / "runs" / run_id
    run_dir.mkdir(parents=True)
    spec = {"paper": "core", "problem": "digits_mlp", "problem_args": {"hidden": 64}, "scale": scale,
            "optimizer": {"name": arm, "impl_version": 1, "hparams": {"lr": 0.01, "betas": [0.9, 0.999]}},
            "schedule": {"name": "constant", "args": {}}, "controllers": [], "init_seed": seed,
            "data_seed": seed, "noise_seed": seed, "epochs": 3, "batch_size": 64,
            "tags": {"arm": arm, "stage": "final"}}
    if status == "failed":
        (run_dir / "spec.json").write_text(json.dumps(spec))
        (run_dir / "failed.json").write_text(json.dumps({"run_id": run_id, "status": "failed",
                                                         "error": "RuntimeError('boom')"}))
    else:
        final = {"train": {"loss": 0.1, "accuracy": 0.99}, "test": {"loss": 0.3, "accuracy": acc}}
        result = {"run_id": run_id, "spec": spec,
                  "deterministic": {"status": status, "final": final, "best": final, "steps": 57, "epochs": 3,
                                    "forward_passes": 57, "backward_passes": 57, "cost_units": 57.0,
                                    "error": None},
                  "volatile": {"wall_time_s": 0.5, "resumes": 0, "provenance": {}}}
        (run_dir / "result.json").write_text(json.dumps(result))
        lines = [json.dumps({"kind": "eval", "epoch": i, "step": 19 * i, "test/accuracy": a, "test/loss": 1 - a})
                 for i, a in enumerate(evals)]
        lines.insert(1, json.dumps({"kind": "optim", "step": 3, "lr": 0.1}))
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return {"run_id": run_id, "status": status, "dir": f"results/{scale}/runs/{run_id}"}


def write_tree(root: Path, scale: str = "full", n: int = 5):
    rng = np.random.default_rng(7)
    entries = []
    for seed in range(n):
        base = 0.90 + 0.01 * rng.standard_normal()
        entries.append(write_run(root, scale, f"m{seed:02d}", "m", seed, base + 0.04))
        entries.append(write_run(root, scale, f"b{seed:02d}", "b", seed, base))
    manifest = root / "results" / scale / "batches" / "core" / "digits_mlp" / "final-0-abc.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"batch": "final-0", "scale": scale, "runs": entries}))
    return manifest


def test_aggregation_reads_the_manifests_runs_and_only_those(tmp_path):
    manifest = write_tree(tmp_path)
    extra = [write_run(tmp_path, "full", "div", "m", 9, float("nan"), status="diverged", evals=(0.5, 0.6)),
             write_run(tmp_path, "full", "bad", "b", 9, 0.0, status="failed")]
    second = manifest.with_name("final-1-def.json")
    second.write_text(json.dumps({"batch": "final-1", "scale": "full", "runs": extra}))
    write_run(tmp_path, "full", "stray", "m", 11, 0.99)     # in results/, in no manifest: never read
    frame = collect_runs([manifest, second], root=tmp_path)
    assert len(frame) == 12 and "stray" not in set(frame["run_id"])
    row = frame.set_index("run_id").loc["m03"]
    assert row["status"] == "ok" and row["optimizer.name"] == "m" and row["tags.arm"] == "m"
    assert row["optimizer.hparams.lr"] == 0.01 and row["optimizer.hparams.betas"] == (0.9, 0.999)
    assert row["seed"] == "3-3-3" and row["steps"] == 57 and row["cost_units"] == 57.0
    assert row["max.test.accuracy"] == 0.8 and row["smoothed.test.accuracy"] == pytest.approx(2.0 / 3)
    assert row["problem_args.hidden"] == 64 and row["batch"] == "final-0"
    statuses = frame.set_index("run_id")["status"]
    assert statuses["div"] == "diverged" and statuses["bad"] == "failed"
    assert np.isnan(frame.set_index("run_id").loc["div", "final.test.accuracy"])
    assert frame.set_index("run_id").loc["bad", "error"] == "RuntimeError('boom')"
    # a moved tree: relative dirs that do not resolve fall back to <scale>/runs/<run_id>
    assert len(collect_runs([manifest], root=tmp_path / "elsewhere")) == 10
    with pytest.raises(InputError, match="does not exist"):
        collect_runs([tmp_path / "missing.json"], root=tmp_path)


def table_body(tex: str) -> str:
    """The rows of a generated table (after its head and foot), without the line-break hints."""
    return tex.split("\\endlastfoot")[1].split("\\end{")[0].replace("\\allowbreak{}", "")


def test_verdict_table_follows_the_results_and_the_scale(tmp_path):
    manifest = write_tree(tmp_path)
    claims = parse_claims(claims_doc())
    table = lambda frame, scale: verdict_table(judge_all(claims, frame, None, scale), claims, scale,
                                               caption="Core claims", label="tab:core")
    tex = table(collect_runs([manifest], root=tmp_path), "full")
    assert "[full scale]" in tex and "replicated" in table_body(tex) and "n=5, paired" in table_body(tex)
    # editing one result file changes the table
    path = tmp_path / "results/full/runs/m02/result.json"
    result = json.loads(path.read_text())
    result["deterministic"]["final"]["test"]["accuracy"] -= 0.5
    path.write_text(json.dumps(result))
    edited = table(collect_runs([manifest], root=tmp_path), "full")
    assert edited != tex and "replicated" not in table_body(edited)
    # smoke: no number of ours, no conclusion
    smoke_manifest = write_tree(tmp_path, scale="smoke")
    smoke = table(collect_runs([smoke_manifest], root=tmp_path), "smoke")
    body = table_body(smoke)
    assert "[smoke scale]" in smoke and "not assessed (smoke)" in body
    assert "replicated" not in body and "paired" not in body and "pp" not in body


def test_figure_is_byte_identical_across_renders_and_stamped(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    manifest = write_tree(tmp_path)
    runs = collect_runs([manifest], root=tmp_path)
    claim = parse_claims(claims_doc()).claims[0]
    a = arm_comparison(runs, claim, "full", tmp_path / "a.pdf")
    b = arm_comparison(runs, claim, "full", tmp_path / "b.pdf")
    data = a.read_bytes()
    assert data.startswith(b"%PDF") and data == b.read_bytes()
    assert b"CreationDate" not in data and b"Matplotlib" not in data
    fig, _ = new_figure()
    stamp(fig, "smoke")
    assert fig.texts[-1].get_text() == "smoke scale"
    pyplot().close(fig)


def test_arm_table_puts_published_beside_ours_and_never_beside_smoke(tmp_path):
    manifest = write_tree(tmp_path)
    runs = collect_runs([manifest], root=tmp_path)
    claim = parse_claims(claims_doc(published={"baseline": "b-pub"})).claims[0]
    published = load_published_file(_core_csv(tmp_path, "core,,digits_mlp,b-pub,accuracy,test,final,mean,"
                                                        "0.9,0.01,5,our note,paper,\n"))
    tex = arm_table(claim, runs, published, "full", caption="Arms", label="tab:arms")
    assert r"90.00 $\pm$ 1.00 (n=5)" in tex and "5 ok" in tex and "[full scale]" in tex
    ours = arm_rows(claim, runs, published, "full")["ours"]
    assert ours.str.contains(r"\(n=5\)").all()
    smoke = arm_rows(claim, runs.assign(scale="smoke"), published, "smoke")
    assert list(smoke["ours"]) == ["--", "--"] and smoke["published"].iloc[1].startswith("90.00")


def _core_csv(tmp_path, row):
    path = tmp_path / "core.csv"
    path.write_text(HEADER + row)
    return path


def test_figures_share_one_style_readable_fonts_and_one_colour_per_optimizer(tmp_path):
    from matplotlib.colors import to_hex

    from optrepro.report.figures import COLOURS, check_printable, colour, curves

    manifest = write_tree(tmp_path)
    runs = collect_runs([manifest], root=tmp_path)
    claim = parse_claims(claims_doc()).claims[0]
    plt = pyplot()
    drawn = {}
    original_close = plt.close

    def keep(fig):  # look at each figure as saved, then close it
        drawn[len(drawn)] = fig

    plt.close = keep
    try:
        curves(runs, "test/accuracy", tmp_path / "curves.pdf", "full", ylabel="test accuracy (%)", factor=100)
        arm_comparison(runs, claim, "full", tmp_path / "arms.pdf")
    finally:
        plt.close = original_close
    for fig in drawn.values():
        texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
                 if t.get_text() and t.get_visible()]
        assert texts and min(t.get_fontsize() for t in texts) >= 7  # printed unscaled: 7 pt is the floor
        assert fig.get_size_inches()[0] <= 6.53
    # the same arm has the same colour in both figures (a line in one, points in the other)
    line_colour = {ln.get_label().split(" (")[0]: to_hex(ln.get_color()) for ln in drawn[0].axes[0].get_lines()}
    assert line_colour == {"b": colour("b"), "m": colour("m")}
    point_colours = {to_hex(c) for coll in drawn[1].axes[0].collections for c in coll.get_facecolors()}
    assert {colour("b"), colour("m")} <= point_colours
    assert colour("adam") == COLOURS["adam"] and colour("some-genome") == colour("some-genome")
    # a figure with small text or wider than the page is refused before it reaches the PDF
    fig, ax = new_figure()
    ax.set_xlabel("tiny", fontsize=5)
    with pytest.raises(ValueError, match="'tiny' is 5 pt"):
        check_printable(fig)
    fig.set_size_inches(8, 3)
    with pytest.raises(ValueError, match="8.00 in wide"):
        check_printable(fig)
    for fig in [fig, *drawn.values()]:
        original_close(fig)


def test_int_ranges_collapse_consecutive_seeds():
    from optrepro.report.tables import int_ranges

    assert int_ranges([45, 42, 43, 44, 47, 49, 50]) == "42--45, 47, 49--50"
    assert int_ranges([43]) == "43" and int_ranges([]) == ""


def test_breakable_keeps_numbers_and_counts_whole():
    from optrepro.report.tables import breakable

    assert breakable("88.1 (n=10)") == r"88.1 \allowbreak{}(n=10)"  # before "(", never after "="
    assert breakable("lr=a_b") == r"lr=\allowbreak{}a\_\allowbreak{}b"


def test_compute_sentence_reports_time_at_full_scale_only():
    from optrepro.report.section import compute_sentence

    runs = pd.DataFrame({"run_id": ["a", "b", "b"], "status": ["ok", "diverged", "diverged"],
                         "device": ["cuda", "cpu", "cpu"], "wall_time_s": [7200.0, 1800.0, 1800.0],
                         "cost_units": [300.0, 24.0, 24.0], "tags.stage": ["tune", "final", "final"]})
    full = compute_sentence(runs, "full")
    assert "2 runs (1 diverged, 1 ok)" in full and "324 pass units" in full and "1 tuning runs" in full
    assert "of CPU time" in full and "of GPU time" in full
    smoke = compute_sentence(runs, "smoke")
    assert "time not reported at smoke scale" in smoke and "of CPU time" not in smoke
    # nothing machine-dependent reaches the smoke PDF: other wall times, the same sentence
    assert compute_sentence(runs.assign(wall_time_s=[1.0, 2.0, 2.0]), "smoke") == smoke
