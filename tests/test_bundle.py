"""Results bundles (optrepro.bundle) on a synthetic results tree: what goes in, a faithful round trip, and every
way a bundle is refused (tampered, unlisted or missing files, unsafe members, a local file that differs).
tests/test_faults.py rebuilds the smoke PDF from a bundle through `make smoke`."""
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from optrepro.bundle import MANIFEST, BundleError, export_bundle, import_bundle
from optrepro.cli import main as cli_main

RUN = "runs/0123456789abcdef0123"
KEPT = [f"{RUN}/spec.json", f"{RUN}/metrics.jsonl", f"{RUN}/result.json", "batches/core/digits_mlp/main-0-abc.json",
        "valley/select/quadratic_deep.json", "plans/feedc0de/index.json", "plans/feedc0de/entries.jsonl"]
LEFT_OUT = [f"{RUN}/checkpoint.pt", f"{RUN}/.lock", "logs/core/x.log", "benchmarks/core/report.tsv",
            "plans/0ldp1an/index.json"]


def results_tree(root: Path) -> Path:
    scale = root / "results" / "smoke"
    for i, rel in enumerate(KEPT + LEFT_OUT):
        path = scale / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"file": rel}))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i + 0.25))  # distinct, ordered, sub-second
    (scale / "plans" / "current").symlink_to("feedc0de")
    return root / "results"


@pytest.fixture
def bundle(tmp_path) -> Path:
    out = tmp_path / "results-smoke.tar.gz"
    export_bundle(results_tree(tmp_path / "src"), "smoke", out)
    return out


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def repack(path: Path, out: Path, change) -> Path:
    """A copy of bundle `path` with its members passed through change(name, body) -> (name, body) or None."""
    with tarfile.open(path) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            kept = change(m.name, src.extractfile(m).read())
            if kept is not None:
                info = tarfile.TarInfo(kept[0])
                info.size = len(kept[1])
                dst.addfile(info, io.BytesIO(kept[1]))
    return out


def test_a_bundle_holds_specs_metrics_results_manifests_stages_and_its_plan(bundle):
    names = set(members(bundle))
    assert names == set(KEPT) | {MANIFEST}
    manifest = json.loads(members(bundle)[MANIFEST])
    assert manifest["scale"] == "smoke" and manifest["plan"] == "feedc0de" and manifest["runs"] == 1
    assert set(manifest["files"]) == set(KEPT)


def test_import_unpacks_every_file_with_its_modification_time(bundle, tmp_path):
    results = tmp_path / "dst" / "results"
    import_bundle(bundle, results)
    source = tmp_path / "src" / "results" / "smoke"
    for rel in KEPT:
        assert (results / "smoke" / rel).read_bytes() == (source / rel).read_bytes()
        assert (results / "smoke" / rel).stat().st_mtime == (source / rel).stat().st_mtime
    assert not any((results / "smoke" / rel).exists() for rel in LEFT_OUT)
    import_bundle(bundle, results)  # again: identical files are left as they are


@pytest.mark.parametrize("change, named", [
    (lambda n, b: (n, b.replace(b"file", b"fiIe")) if n.endswith("result.json") else (n, b), f"{RUN}/result.json"),
    (lambda n, b: None if n.endswith("metrics.jsonl") else (n, b), f"{RUN}/metrics.jsonl"),
    (lambda n, b: (n.replace("select", "selected"), b), "valley/selected/quadratic_deep.json"),
    (lambda n, b: None if n == MANIFEST else (n, b), MANIFEST),
])
def test_a_tampered_bundle_is_refused_naming_the_file_and_nothing_is_written(bundle, tmp_path, change, named):
    tampered = repack(bundle, tmp_path / "tampered.tar.gz", change)
    results = tmp_path / "dst" / "results"
    with pytest.raises(BundleError) as exc:
        import_bundle(tampered, results)
    assert str(exc.value).startswith(named)
    assert [p.name for p in results.iterdir()] == []  # no results/smoke, no leftover temporary folder


@pytest.mark.parametrize("member", [
    tarfile.TarInfo("../outside.json"),
    tarfile.TarInfo("/tmp/absolute.json"),
    tarfile.TarInfo("runs/link"),
    tarfile.TarInfo("runs/alias"),  # a link inside the bundle would alias one run's files to another's
    tarfile.TarInfo("runs/hard-alias"),
])
def test_unsafe_members_are_refused(bundle, tmp_path, member):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(bundle) as src, tarfile.open(evil, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        if member.name == "runs/link":
            member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
            dst.addfile(member)
        elif member.name == "runs/alias":
            member.type, member.linkname = tarfile.SYMTYPE, f"../{RUN}/result.json"
            dst.addfile(member)
        elif member.name == "runs/hard-alias":
            member.type, member.linkname = tarfile.LNKTYPE, f"{RUN}/result.json"
            dst.addfile(member)
        else:
            member.size = 2
            dst.addfile(member, io.BytesIO(b"{}"))
    with pytest.raises(BundleError, match="outside|link"):
        import_bundle(evil, tmp_path / "dst" / "results")
    assert not (tmp_path / "dst" / "outside.json").exists()


def test_a_local_file_that_differs_is_never_overwritten(bundle, tmp_path):
    results = tmp_path / "dst" / "results"
    local = results / "smoke" / RUN / "result.json"
    local.parent.mkdir(parents=True)
    local.write_text("mine")
    with pytest.raises(BundleError, match="exists and differs"):
        import_bundle(bundle, results)
    assert local.read_text() == "mine" and not (results / "smoke" / RUN / "spec.json").exists()


def test_the_published_sha256_is_checked_and_errors_are_one_line(bundle, tmp_path, capsys):
    assert cli_main(["bundle", "import", str(bundle), "--results", str(tmp_path / "r"), "--sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not the 000" in err
    assert cli_main(["bundle", "import", str(bundle), "--results", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "smoke" / "imported.json").read_text())["runs"] == 1


def test_done_batches_need_no_data_and_undone_ones_still_do(tmp_path):
    """At full scale a batch of a problem with a dataset lists the data's marker as an input. With every batch's
    manifest present (as a bundle leaves them) and no data, the dry run schedules neither a download nor a
    batch (Snakemake needs a missing input only for a job that has to run); remove one manifest and both come
    back."""
    import shutil

    import yaml

    from optrepro.workflow import load_plan, read_yaml
    from test_workflow import ROOT, snakemake

    wd = tmp_path / "wd"
    for sub in ("config", "paper"):
        shutil.copytree(ROOT / sub, wd / sub, ignore=shutil.ignore_patterns("build", "generated"))
    config = {**yaml.safe_load((wd / "config" / "config.yaml").read_text()), "scale": "full",
              "papers": ["crowded_valley"], "problems": ["fmnist_2c2d"], "results_dir": str(wd / "results"),
              "batch_target_s": {"full": 1e9, "smoke": 60}}  # one batch per stage: a few files to write
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    plan = load_plan(read_yaml(wd / "config" / "config.yaml"), wd / "config")
    assert all(b["datasets"] == ["fashion_mnist"] for b in plan.index.values())
    stamp = 1_700_000_000
    ordered = sorted(plan.index.values(), key=lambda b: bool(b["inputs"]))  # deferred batches after selection
    for i, b in enumerate(ordered):
        if b["inputs"] and not (wd / b["inputs"][0]).exists():
            for path in b["inputs"]:
                (wd / path).parent.mkdir(parents=True, exist_ok=True)
                (wd / path).write_text("{}")
                os.utime(wd / path, (stamp + i, stamp + i))
            stamp += 1
        (wd / b["manifest"]).parent.mkdir(parents=True, exist_ok=True)
        (wd / b["manifest"]).write_text("{}")
        os.utime(wd / b["manifest"], (stamp + i + 1, stamp + i + 1))
    done = snakemake(wd, "-n", "--workflow-profile", "none")
    assert done.returncode == 0, done.stderr[-3000:]
    assert scheduled(done) == {"paper_report", "report_pdf", "all"}, done.stdout[-3000:]
    (wd / ordered[0]["manifest"]).unlink()
    undone = snakemake(wd, "-n", "--workflow-profile", "none")
    assert undone.returncode == 0, undone.stderr[-3000:]
    assert {"data_fetch", "run_batch"} <= scheduled(undone), undone.stdout[-3000:]


def scheduled(proc) -> set[str]:
    """The rules of the jobs a dry run lists."""
    import re

    return set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))


def test_a_results_tree_that_once_received_a_bundle_exports_one_that_imports(tmp_path):
    """A BUNDLE.json (or imported.json) left in results/<scale> is not exported: as a member it would replace
    the new bundle's own manifest when unpacked."""
    results = results_tree(tmp_path / "src")
    (results / "smoke" / MANIFEST).write_text('{"format": 0}')
    (results / "smoke" / "imported.json").write_text('{"bundle": "old.tar.gz"}')
    out = tmp_path / "again.tar.gz"
    export_bundle(results, "smoke", out)
    assert sorted(members(out)) == sorted([*KEPT, MANIFEST])
    import_bundle(out, tmp_path / "dst" / "results")
