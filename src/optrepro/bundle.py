"""Results bundles: released results a reviewer rebuilds and checks the report from, without training.

    optrepro bundle export --scale full              -> results-full.tar.gz (and its sha256, printed)
    optrepro bundle import results-full.tar.gz       -> results/full/..., verified file by file

A bundle holds results/<scale> as the DAG left it: every run's spec.json, metrics.jsonl and result.json, the
batch manifests, what papers' own stages wrote (tuning selections, search states), and the plan it came from
(plans/<hash>/, the one plans/current named). It leaves out checkpoints (a complete run has none), locks, logs,
Snakemake's benchmark files and older plans. BUNDLE.json lists every file with its sha256.

Import checks every member against BUNDLE.json before anything is written to results/ (a file that differs,
is missing or is not listed refuses the bundle, naming it), refuses unsafe members (absolute paths, `..`,
links, devices: optrepro.data.layout.safe_extract), and never overwrites a local file that differs. Files keep
their modification times, so Snakemake sees each manifest as newer than the files it was built from (a tuning
selection before the re-runs that read it). Run jobs list data markers as inputs at full scale, yet no
download is scheduled: Snakemake does not rerun a job whose output is there and newer than the inputs that are
there merely because an input is missing, and so never needs the missing marker (tests/test_bundle.py checks
this on the full-scale DAG). So the DAG schedules no download and no training for the runs the bundle holds,
rebuilds the report from them, and trains only runs whose spec differs (a changed spec is a new run id, in a
batch with a new manifest). Fetching the data later makes the markers newer than the manifests, and their
batches run again (finding every run complete, they train nothing).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from optrepro.io import atomic_write_json

FORMAT = 1
MANIFEST = "BUNDLE.json"
IMPORTED = "imported.json"  # written by import beside the runs: which bundle they came from
LEFT_OUT_DIRS = ("logs", "benchmarks", "plans")  # plans: only the current one goes in, added explicitly
LEFT_OUT_NAMES = ("checkpoint.pt", "checkpoint.pt.tmp", ".lock")


class BundleError(ValueError):
    """A bundle that cannot be trusted or unpacked; the message names the file."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def bundle_files(scale_dir: Path) -> list[str]:
    """The paths (relative to results/<scale>) a bundle of `scale_dir` holds, sorted."""
    scale_dir = Path(scale_dir)
    files = []
    for path in scale_dir.rglob("*"):
        rel = path.relative_to(scale_dir)
        if path.is_symlink() or not path.is_file() or rel.parts[0] in LEFT_OUT_DIRS:
            continue
        if path.name in LEFT_OUT_NAMES or path.name.startswith(".") or path.name.endswith((".tmp", ".part")):
            continue
        if rel.as_posix() in (MANIFEST, IMPORTED):  # an earlier bundle's manifest would replace this one's
            continue
        files.append(rel.as_posix())
    current = scale_dir / "plans" / "current"
    if not current.exists():
        raise BundleError(f"{current}: no current plan (run the DAG, or `optrepro plan`, first)")
    plan = current.resolve()
    files += [f"plans/{plan.name}/{p.name}" for p in sorted(plan.iterdir()) if p.is_file()]
    return sorted(files)


def export_bundle(results: Path, scale: str, output: Path) -> dict:
    """Write the bundle of results/<scale> to `output` (a .tar.gz); return its BUNDLE.json."""
    scale_dir = Path(results) / scale
    if not scale_dir.is_dir():
        raise BundleError(f"{scale_dir}: no results of scale {scale!r} to export")
    files = bundle_files(scale_dir)
    runs = sorted({f.split("/")[1] for f in files if f.startswith("runs/") and f.endswith("/result.json")})
    manifest = {"format": FORMAT, "scale": scale, "plan": (scale_dir / "plans" / "current").resolve().name,
                "runs": len(runs), "files": {f: _sha256(scale_dir / f) for f in files}}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        blob = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(blob), int((scale_dir / files[0]).stat().st_mtime), 0o644
        tar.addfile(info, _BytesReader(blob))
        for f in files:
            info = tar.gettarinfo(scale_dir / f, arcname=f)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(scale_dir / f, "rb") as body:
                tar.addfile(info, body)
    os.replace(tmp, output)
    return manifest


class _BytesReader:
    def __init__(self, blob: bytes):
        self._blob, self._at = blob, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._blob) if n < 0 else self._at + n
        out, self._at = self._blob[self._at:end], min(end, len(self._blob))
        return out


def verify_unpacked(root: Path) -> dict:
    """Check an unpacked bundle in `root` against its BUNDLE.json; return the manifest."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{MANIFEST}: missing, so nothing in the bundle can be checked")
    try:
        manifest = json.loads(path.read_text())
        files = dict(manifest["files"])
        scale = manifest["scale"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{MANIFEST}: unreadable ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST}: bundle format {manifest.get('format')!r}; this version reads {FORMAT}")
    from optrepro.problems.registry import SCALES

    if scale not in SCALES:
        raise BundleError(f"{MANIFEST}: unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    for p in Path(root).rglob("*"):  # a link would alias a run's files to another's (or outside results/)
        if p.is_symlink() or (p.is_file() and p.stat().st_nlink > 1):
            raise BundleError(f"{p.relative_to(root).as_posix()}: a link; a bundle holds plain files only")
    present = sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*")
                     if not p.is_dir() and p.relative_to(root).as_posix() != MANIFEST)
    for rel in present:
        if rel not in files:
            raise BundleError(f"{rel}: in the bundle but not in {MANIFEST} (tampered or not an optrepro bundle)")
        if _sha256(Path(root) / rel) != files[rel]:
            raise BundleError(f"{rel}: its sha256 differs from the one {MANIFEST} lists (tampered or damaged)")
    missing = sorted(set(files) - set(present))
    if missing:
        raise BundleError(f"{missing[0]}: listed in {MANIFEST} but missing from the bundle")
    return manifest


def import_bundle(bundle: Path, results: Path, sha256: str | None = None) -> dict:
    """Verify `bundle` and unpack it into results/<scale>; return its BUNDLE.json. Nothing is written to
    results/ unless every file checks out; a local file that differs is never overwritten."""
    from optrepro.data.layout import UnsafeArchiveError, safe_extract

    bundle = Path(bundle)
    if sha256 is not None and _sha256(bundle) != sha256.lower():
        raise BundleError(f"{bundle}: its sha256 {_sha256(bundle)} is not the {sha256} it should have")
    Path(results).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=results, prefix=".bundle.", suffix=".tmp"))
    try:
        try:
            unpacked = safe_extract(bundle.resolve(), work / "unpacked")
        except UnsafeArchiveError as exc:
            raise BundleError(f"{bundle}: {exc}") from None
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise BundleError(f"{bundle}: not a readable bundle ({type(exc).__name__}: {exc})") from None
        manifest = verify_unpacked(unpacked)
        target = Path(results) / manifest["scale"]
        for rel in manifest["files"]:
            local = target / rel
            if local.exists() and _sha256(local) != manifest["files"][rel]:
                raise BundleError(f"{local}: exists and differs from the bundle's {rel}; move it away first")
        for rel in sorted(manifest["files"]):
            local = target / rel
            if not local.exists():
                local.parent.mkdir(parents=True, exist_ok=True)
                os.replace(unpacked / rel, local)  # keeps the modification time the bundle recorded
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


# --- CLI ---------------------------------------------------------------------------------------------

def _cmd_export(args) -> int:
    output = Path(args.output or f"results-{args.scale}.tar.gz")
    manifest = export_bundle(Path(args.results), args.scale, output)
    print(f"{output}: {manifest['runs']} runs, {len(manifest['files'])} files, plan {manifest['plan']}; "
          f"sha256 {_sha256(output)} (publish it beside the bundle: `optrepro bundle import {output.name} "
          f"--sha256 ...` checks it)")
    return 0


def _cmd_import(args) -> int:
    manifest = import_bundle(Path(args.bundle), Path(args.results), args.sha256)
    atomic_write_json(Path(args.results) / manifest["scale"] / IMPORTED,
                      {"bundle": Path(args.bundle).name, "plan": manifest["plan"], "runs": manifest["runs"]})
    print(f"{args.bundle}: verified, {manifest['runs']} runs of scale {manifest['scale']} in "
          f"{Path(args.results) / manifest['scale']} (plan {manifest['plan']}); "
          f"`make report SCALE={manifest['scale']}` rebuilds the report from them")
    return 0


def add_commands(sub) -> None:
    from optrepro.problems.registry import SCALES

    p = sub.add_parser("bundle", help="results bundles: export results/<scale> for release, import one")
    bsub = p.add_subparsers(dest="bundle_command", required=True)
    e = bsub.add_parser("export", help="pack results/<scale> (no checkpoints) with a checksum manifest and its plan")
    e.add_argument("--scale", required=True, choices=SCALES)
    e.add_argument("--results", default="results", help="the results directory (config results_dir)")
    e.add_argument("--output", help="the bundle to write (default results-<scale>.tar.gz)")
    e.set_defaults(func=_cmd_export)
    i = bsub.add_parser("import", help="verify a bundle file by file and unpack it into results/<scale>")
    i.add_argument("bundle")
    i.add_argument("--results", default="results", help="the results directory (config results_dir)")
    i.add_argument("--sha256", help="the bundle's published sha256, checked first")
    i.set_defaults(func=_cmd_import)
