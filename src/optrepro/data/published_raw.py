"""Published per-run results of a study ("raw results"), kept in the repository in a compact form, and the
fetcher that adds more of them from the authors' results repository through the checksummed download code.

Layout (one file per cell and optimizer; the cell is the study's budget, schedule and problem):

    paper/published/raw/<study>/<budget>/<schedule>/<problem>/<optimizer>.json
    {"format": 1, "study": ..., "repo": "owner/name", "budget": ..., "schedule": ..., "problem": ...,
     "optimizer": <the results' optimizer folder>,
     "runs": [{"commit": <40 hex>, "path": <file in repo>, "random_seed": 42, "num_epochs": 100, "batch_size": 128,
               "optimizer_hyperparams": {...}, "training_params": {...} (absent when not transcribed),
               "test_losses": [...], "valid_losses": ..., "train_losses": ..., "minibatch_train_losses": ...}, ...]}

Each run keeps the keys and values of its DeepOBS JSON (Crowded Valley: one JSON per run), traced to its file in
the results repository at a commit. A curve is a list with an entry per evaluation (index 0 = before training),
or, where only some entries were transcribed, an object {"<epoch>": value}; `PublishedRun.curve` returns a
full-length list either way, None where unknown. `minibatch_train_losses` is stored de-duplicated (DeepOBS's TF
runner appends each logged value twice). Nothing here imports torch.
"""
from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from optrepro.io import atomic_write_text
from optrepro.report.validation import PAPER_DIR

FORMAT = 1
DEFAULT_ROOT = PAPER_DIR / "published" / "raw"
CURVES = ("train_losses", "valid_losses", "test_losses", "train_accuracies", "valid_accuracies", "test_accuracies",
          "minibatch_train_losses")
RUN_KEYS = ("random_seed", "num_epochs", "batch_size", "l2_reg", "optimizer_hyperparams", "training_params")

# The Crowded Valley results repository (ICML 2021 version) and where its files are served, pinned by commit.
CROWDED_VALLEY_REPO = "SirRob1997/Crowded-Valley---Results"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
# results_main/<budget>/<schedule>/<problem>/<optimizer>/<hyperparameter folder>/random_seed__<s>__<time>.json
PATH_RE = re.compile(r"^(?P<tree>[^/]+)/(?P<budget>[^/]+)/(?P<schedule>[^/]+)/(?P<problem>[^/]+)/(?P<optimizer>[^/]+)/"
                     r"(?P<setting>[^/]+)/random_seed__(?P<seed>\d+)__(?P<time>[0-9-]+)\.json$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class PublishedRun:
    """One published run: its cell, seed, hyperparameters and curves, and the file it was read from."""

    study: str
    budget: str
    schedule: str
    problem: str
    optimizer: str  # the results' optimizer folder, e.g. "AdamOptimizer"
    seed: int
    num_epochs: int
    batch_size: int
    hyperparams: Mapping[str, Any]
    training_params: Mapping[str, Any] | None
    curves: Mapping[str, Any]
    repo: str
    commit: str
    path: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"{self.repo}@{self.commit} {self.path}"

    @property
    def setting(self) -> str:
        """The hyperparameter folder of the results tree (one per setting; seeds are files inside it)."""
        return PurePosixPath(self.path).parent.name

    @property
    def started(self) -> str:
        """The start time in the file name, YYYY-MM-DD-HH-MM-SS (runs of one process are seconds apart)."""
        match = PATH_RE.match(self.path)
        return match["time"] if match else ""

    def curve(self, name: str) -> list[float | None]:
        """The curve `name` with one entry per evaluation (num_epochs + 1), None where not transcribed."""
        if name not in CURVES:
            raise KeyError(f"unknown curve {name!r}. Valid choices: {', '.join(CURVES)}")
        value = self.curves.get(name)
        length = self.num_epochs + 1
        if value is None:
            return [None] * length
        if isinstance(value, Mapping):
            out: list[float | None] = [None] * length
            for epoch, v in value.items():
                out[int(epoch)] = float(v)
            return out
        return [None if v is None else float(v) for v in value]

    def row(self) -> dict[str, Any]:
        """A flat dict for a runs table (hyperparameters as hp.<name>)."""
        return {"study": self.study, "budget": self.budget, "schedule": self.schedule, "problem": self.problem,
                "optimizer": self.optimizer, "seed": self.seed, "setting": self.setting, "started": self.started,
                "source": self.source, **{f"hp.{k}": v for k, v in self.hyperparams.items()}}


# ------------------------------------------------------------------------------------------------ reading
def cell_file(root: str | Path, study: str, budget: str, schedule: str, problem: str, optimizer: str) -> Path:
    for part in (study, budget, schedule, problem, optimizer):
        if not part or "/" in part or part.startswith("."):
            raise ValueError(f"bad path component {part!r}")
    return Path(root) / study / budget / schedule / problem / f"{optimizer}.json"


def _runs_of(path: Path, doc: Mapping[str, Any]) -> list[PublishedRun]:
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r}, this code reads format {FORMAT}")
    out = []
    for r in doc["runs"]:
        curves = {k: r[k] for k in CURVES if k in r}
        extra = {k: v for k, v in r.items() if k not in CURVES and k not in RUN_KEYS and k not in ("commit", "path")}
        out.append(PublishedRun(
            study=doc["study"], budget=doc["budget"], schedule=doc["schedule"], problem=doc["problem"],
            optimizer=doc["optimizer"], seed=int(r["random_seed"]), num_epochs=int(r["num_epochs"]),
            batch_size=int(r["batch_size"]), hyperparams=dict(r["optimizer_hyperparams"]),
            training_params=r.get("training_params"), curves=curves, repo=doc["repo"], commit=r["commit"],
            path=r["path"], extra=extra))
    return out


def load_runs(root: str | Path = DEFAULT_ROOT, study: str = "crowded_valley", *, budget: str | None = None,
              schedule: str | None = None, problem: str | None = None,
              optimizer: str | None = None) -> list[PublishedRun]:
    """Every stored run of `study` matching the filters, ordered by cell, optimizer, seed and file."""
    base = Path(root) / study
    if not base.is_dir():
        raise FileNotFoundError(f"no published raw results for study {study!r} under {root}")
    pattern = "/".join(x or "*" for x in (budget, schedule, problem)) + f"/{optimizer or '*'}.json"
    runs = []
    for path in sorted(base.glob(pattern)):
        runs.extend(_runs_of(path, json.loads(path.read_text())))
    return sorted(runs, key=lambda r: (r.budget, r.schedule, r.problem, r.optimizer, r.seed, r.path))


def find_run(runs: Iterable[PublishedRun], **match: Any) -> PublishedRun:
    """The one run whose attributes equal `match` (e.g. optimizer="AdamOptimizer", seed=44, budget="oneshot")."""
    hits = [r for r in runs if all(getattr(r, k) == v for k, v in match.items())]
    if len(hits) != 1:
        raise LookupError(f"{len(hits)} published runs match {match}")
    return hits[0]


# ------------------------------------------------------------------------------------------------ writing
def parse_path(path: str) -> dict[str, str]:
    """budget, schedule, problem, optimizer, setting, seed, time of a results-repository path."""
    match = PATH_RE.match(path)
    if not match:
        raise ValueError(f"{path!r} is not a results path <tree>/<budget>/<schedule>/<problem>/<optimizer>/"
                         "<setting>/random_seed__<seed>__<time>.json")
    return match.groupdict()


def record_from_raw(raw: Mapping[str, Any], *, path: str, commit: str) -> dict[str, Any]:
    """A DeepOBS result JSON -> the stored run record (its own keys; minibatch losses de-duplicated)."""
    if not COMMIT_RE.match(commit):
        raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
    meta = parse_path(path)
    if int(meta["seed"]) != int(raw["random_seed"]):
        raise ValueError(f"{path}: file name says seed {meta['seed']}, contents say {raw['random_seed']}")
    record: dict[str, Any] = {"commit": commit, "path": path}
    for key in RUN_KEYS:
        if key in raw:
            record[key] = raw[key]
    for key in CURVES:
        if key in raw:
            values = list(raw[key])
            if key == "minibatch_train_losses":
                values = _deduplicate(values)
            record[key] = values
    return record


def _deduplicate(values: list[float]) -> list[float]:
    """DeepOBS's TF runner appends every logged minibatch loss twice; keep one of each pair."""
    if len(values) % 2 or any(a != b for a, b in zip(values[::2], values[1::2])):
        return values  # not the doubled pattern: keep as logged
    return values[::2]


def _dumps(doc: Mapping[str, Any]) -> str:
    """The header indented, each run on one line (small files, readable diffs)."""
    head = {k: v for k, v in doc.items() if k != "runs"}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + ['  "runs": [']
    runs = [json.dumps(r, separators=(",", ":")) for r in doc["runs"]]
    lines += [f"    {r}," for r in runs[:-1]] + ([f"    {runs[-1]}"] if runs else [])
    return "\n".join(lines + ["  ]", "}"]) + "\n"


def add_runs(records: Iterable[Mapping[str, Any]], root: str | Path = DEFAULT_ROOT, study: str = "crowded_valley",
             repo: str = CROWDED_VALLEY_REPO) -> list[Path]:
    """Merge run records into their cell files (a record with the same path replaces the stored one)."""
    by_file: dict[Path, list[Mapping[str, Any]]] = {}
    meta_of: dict[Path, dict[str, str]] = {}
    for record in records:
        meta = parse_path(record["path"])
        target = cell_file(root, study, meta["budget"], meta["schedule"], meta["problem"], meta["optimizer"])
        by_file.setdefault(target, []).append(record)
        meta_of[target] = meta
    written = []
    for target, new in by_file.items():
        meta = meta_of[target]
        doc = json.loads(target.read_text()) if target.exists() else {
            "format": FORMAT, "study": study, "repo": repo, "budget": meta["budget"], "schedule": meta["schedule"],
            "problem": meta["problem"], "optimizer": meta["optimizer"], "runs": []}
        if doc["repo"] != repo:
            raise ValueError(f"{target} holds runs of {doc['repo']}, not {repo}")
        runs = {r["path"]: r for r in doc["runs"]}
        runs.update({r["path"]: dict(r) for r in new})
        doc["runs"] = sorted(runs.values(), key=lambda r: (int(r["random_seed"]), r["path"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, _dumps(doc))
        written.append(target)
    return written


# ------------------------------------------------------------------------------------------------ fetching
def raw_source(paths: Iterable[str], commit: str, repo: str = CROWDED_VALLEY_REPO, *, base_url: str = RAW_URL):
    """A data Source (optrepro.data.sources) whose files are the results-repository `paths` at `commit`.

    The authors publish no checksums: a file is pinned by the commit in its URL, and the download code records
    the sha256 of the first copy (data/<source>/checksums.json) and refuses a later copy that differs.
    """
    from optrepro.data.sources import RemoteFile, Source

    if not COMMIT_RE.match(commit):
        raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
    files = []
    for path in paths:
        parse_path(path)
        url = base_url.format(repo=repo, commit=commit, path=urllib.parse.quote(path, safe="/"))
        files.append(RemoteFile(name=f"{commit}/{path}", urls=(url,), checksum=None))
    name = f"published_raw_{repo.replace('/', '_').lower()}"
    return Source(name=name, description=f"per-run results of {repo}", licence="as published by the authors",
                  files=tuple(files), prepare=None, kind="weights")


def fetch_runs(paths: Iterable[str], commit: str, *, cache: str | Path = "data", root: str | Path | None = None,
               study: str = "crowded_valley", repo: str = CROWDED_VALLEY_REPO, base_url: str = RAW_URL,
               retries: int = 3, backoff_s: float = 2.0) -> list[Path]:
    """Download the results files `paths` at `commit` (verified, cached under `cache`) and add them to the
    stored raw results under `root`. Returns the cell files written."""
    from optrepro.data.download import ensure_files, pin_checksums, raw_dir

    paths = list(paths)
    root = DEFAULT_ROOT if root is None else root
    source = raw_source(paths, commit, repo, base_url=base_url)
    digests = ensure_files(source, cache, retries=retries, backoff_s=backoff_s)
    records = []
    for path in paths:
        raw = json.loads((raw_dir(cache, source.name) / commit / path).read_text())
        records.append(record_from_raw(raw, path=path, commit=commit))
    pin_checksums(source, cache, digests)  # only copies that parsed as runs are recorded
    return add_runs(records, root, study, repo)
