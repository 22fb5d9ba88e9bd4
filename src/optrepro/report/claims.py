"""Registered claims (paper/claims/<paper>.yaml): the format, its loaders and the checks against published rows.

Each paper's file is written before any full-scale run (docs/replication.md) and declares the claims' families
itself: a family is local to its file, so Holm's correction runs within one paper. The loaders refuse unknown
keys, wrong types, undeclared families, a claim filed under another paper and inconsistent references, naming
the bad value, so a typo never silently drops a claim.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from optrepro.report.validation import PAPER_DIR, InputError, load_schema, load_yaml, validate

CLAIMS_SCHEMA = PAPER_DIR / "claims.schema.json"
CLAIMS_DIR = PAPER_DIR / "claims"


@dataclass(frozen=True)
class Quantity:
    metric: str
    split: str
    value: str          # final | best | max | smoothed | at_best_valid
    aggregation: str    # mean | median
    points: bool = False

    @property
    def column(self) -> str:
        """The aggregated frame's column holding this quantity, e.g. final.test.accuracy."""
        return f"{self.value}.{self.split}.{self.metric}"


@dataclass(frozen=True)
class Family:
    name: str
    correction: str     # holm | bh | none
    alpha: float = 0.05
    description: str = ""


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    statement: str
    quantity: Quantity
    method: str                     # tags.arm of the method's runs
    baseline: str                   # tags.arm of the baseline's runs
    direction: str                  # greater | less: the method's value is greater / less than the baseline's
    delta_star: float
    cells: tuple[str, ...]
    family: str
    every_cell: bool
    min_seeds: int
    cell_key: str = "problem"
    up_to_cell: str | None = None
    select: dict[str, Any] = field(default_factory=dict)
    baseline_tolerance: float | None = None
    published_method: str | None = None
    published_baseline: str | None = None
    not_testable: str | None = None
    source: str = ""
    short: str = ""

    @property
    def summary(self) -> str:
        """The claim in a few words (the scoreboard's column): `short`, else the statement."""
        return self.short or self.statement

    @property
    def tested_cells(self) -> tuple[str, ...]:
        """'Up to X %' claims are tested at the cell named in advance, never at our best cell."""
        return (self.up_to_cell,) if self.up_to_cell else self.cells

    @property
    def sign(self) -> int:
        return 1 if self.direction == "greater" else -1


@dataclass(frozen=True)
class ClaimSet:
    families: dict[str, Family]
    claims: tuple[Claim, ...]

    def __iter__(self):
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)

    def get(self, claim_id: str) -> Claim:
        for claim in self.claims:
            if claim.id == claim_id:
                return claim
        from optrepro.registry import unknown

        raise unknown("claim", claim_id, [c.id for c in self.claims])


def parse_claims(data: Any, source: str = "claims", schema_path: Path = CLAIMS_SCHEMA) -> ClaimSet:
    validate(data, load_schema(schema_path), source)
    families = {name: Family(name=name, correction=f["correction"], alpha=float(f.get("alpha", 0.05)),
                             description=f.get("description", ""))
                for name, f in data["families"].items()}
    claims, seen = [], set()
    for i, c in enumerate(data["claims"]):
        where = f"{source}: claims[{i}] (id {c['id']!r})"
        if c["id"] in seen:
            raise InputError(f"{where}: duplicate claim id {c['id']!r}")
        seen.add(c["id"])
        if c["family"] not in families:
            raise InputError(f"{where}: family {c['family']!r} is not declared under 'families'. "
                             f"Declared families: {', '.join(sorted(families))}")
        if c["arms"]["method"] == c["arms"]["baseline"]:
            raise InputError(f"{where}: arms.method and arms.baseline are both {c['arms']['method']!r}")
        up_to = c.get("up_to_cell")
        if up_to is not None and up_to not in c["cells"]:
            raise InputError(f"{where}: up_to_cell {up_to!r} is not one of its cells: {', '.join(c['cells'])}")
        if up_to is not None and c["every_cell"]:
            raise InputError(f"{where}: an 'up to' claim (up_to_cell) cannot also be an every_cell claim")
        published = c.get("published") or {}
        if c.get("baseline_check") and not published.get("baseline"):
            raise InputError(f"{where}: baseline_check needs published.baseline (the baseline's arm name in "
                             f"paper/published/{c['paper']}.csv)")
        q = c["quantity"]
        claims.append(Claim(
            id=c["id"], paper=c["paper"], statement=c["statement"], source=c.get("source", ""),
            short=c.get("short", ""),
            quantity=Quantity(metric=q["metric"], split=q["split"], value=q["value"],
                              aggregation=q["aggregation"], points=bool(q.get("points", False))),
            method=c["arms"]["method"], baseline=c["arms"]["baseline"], direction=c["direction"],
            delta_star=float(c["delta_star"]), cells=tuple(c["cells"]), cell_key=c.get("cell_key", "problem"),
            up_to_cell=up_to, family=c["family"], every_cell=c["every_cell"], min_seeds=c["min_seeds"],
            select=dict(c.get("select") or {}),
            baseline_tolerance=(c.get("baseline_check") or {}).get("tolerance"),
            published_method=published.get("method"), published_baseline=published.get("baseline"),
            not_testable=c.get("not_testable")))
    return ClaimSet(families=families, claims=tuple(claims))


def load_claims(path: Path, schema_path: Path = CLAIMS_SCHEMA) -> ClaimSet:
    """One paper's claims file, paper/claims/<paper>.yaml: every claim in it belongs to <paper>."""
    path = Path(path)
    claim_set = parse_claims(load_yaml(path), source=str(path), schema_path=schema_path)
    for claim in claim_set:
        if claim.paper != path.stem:
            raise InputError(f"{path}: claim {claim.id!r} has paper {claim.paper!r}; a claims file holds the "
                             f"claims of one paper, its name ({path.stem!r})")
    return claim_set


def load_all_claims(directory: Path = CLAIMS_DIR, papers: Iterable[str] | None = None,
                    schema_path: Path = CLAIMS_SCHEMA) -> ClaimSet:
    """The claims of `papers` (default: every file in `directory`), in that order. Claim ids and family names
    must be unique across papers: each family belongs to the one file that declares it."""
    directory = Path(directory)
    names = list(papers) if papers is not None else sorted(p.stem for p in directory.glob("*.yaml"))
    families: dict[str, Family] = {}
    claims: list[Claim] = []
    owner: dict[str, str] = {}
    for name in names:
        path = directory / f"{name}.yaml"
        if not path.exists():
            continue  # a paper without registered claims has nothing to judge
        one = load_claims(path, schema_path)
        for family in one.families:
            if family in owner:
                raise InputError(f"{path}: family {family!r} is already declared in {directory / owner[family]}"
                                 ".yaml; families are per paper file, so give it a name of its own")
            owner[family] = f"{name}"
        for claim in one:
            if claim.id in {c.id for c in claims}:
                raise InputError(f"{path}: claim id {claim.id!r} is also registered by another paper")
        families.update(one.families)
        claims.extend(one.claims)
    return ClaimSet(families=families, claims=tuple(claims))


def check_published_refs(claims: ClaimSet, published) -> None:
    """Every published arm a claim names must have a row for each tested cell (matched on the claim's paper,
    cell, arm, metric, split and statistic); refuse a reference that finds nothing, before any table is built.
    (A row of tier `summary` resolves, but the verdict engine never judges against it.)"""
    from optrepro.report.published import find_published

    for claim in claims:
        for role, arm in (("method", claim.published_method), ("baseline", claim.published_baseline)):
            if arm is None:
                continue
            for cell in claim.tested_cells:
                if find_published(published, claim, cell, arm) is None:
                    raise InputError(
                        f"claim {claim.id!r}: published.{role} {arm!r} has no row in paper/published/"
                        f"{claim.paper}.csv for cell {cell!r}, metric {claim.quantity.metric!r}, split "
                        f"{claim.quantity.split!r}, statistic {claim.quantity.value!r}")
