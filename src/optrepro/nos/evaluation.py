"""The evaluation of what NOS found: Opt1-Opt10, A1-A5 and our search's best genomes against Adam, SGD with
momentum and RMSProp, on EfficientNetV2-S (Morgan & Hougen, arXiv 2404.06679, abstract: from scratch on CIFAR-100
and TinyImageNet, fine-tuned on Flowers102, Stanford Cars and Caltech101). Torch-free.

Every arm gets the same protocol on every problem (config/papers/nos.yaml `evaluation:`):

    tune    one run per learning rate of `rates` (the authors' seven, 10 .. 1e-5), seed `seeds.tune`
    select  per problem, each arm's rate with the best validation accuracy (held-out split, never test) ->
            results/<scale>/nos/eval/select-<problem>.json (torch-free job, `optrepro nos eval-select`)
    rerun   each arm's winner with every seed of `seeds.rerun` (deferred specs resolved from the selection
            file): the runs the claims and tables use; the tuning seed is not among them

Arms (`ARMS` below): the fifteen released optimizers with their decays on ("opt1" .. "a5", the discovered form),
the seven with switchable decays also with them off ("opt4-nodecay" .. "opt10-nodecay", the authors' default
use_decay=False), the three baselines, and "searched1" .. "searchedN", the N best final particles of our search
(ranked by their last fitness; optimizer nos_genome with the search's settings), whose tuning runs are deferred
specs resolved from the search's summary.json.

Every run uses the authors' warm-up / hold / cosine schedule with their proportions (W = 6,400 and H = 12,800 of
T = 96,000 steps, finalOptimizers.py's usage comment), scaled to the run's length T = epochs x steps per epoch;
the NOS optimizers' cyclical momentum gets the same W and H.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from optrepro import plan as planmod
from optrepro.registry import check_keys, unknown

PROBLEMS = ("nos_cifar100_effv2s", "nos_tinyimagenet_effv2s", "nos_flowers102_effv2s", "nos_cars_effv2s",
            "nos_caltech101_effv2s")
# Training examples after the validation hold-out (optrepro.problems.images): full scale, the official splits
# (CIFAR-100 50,000 - 5,000; TinyImageNet 100,000 - 10,000; Flowers102 train + val 2,040 - 1,020; Cars 8,144
# - 1,000; Caltech101 80 % of 8,677 = 6,941 - 500); smoke scale, the generated 320 images - 64.
# tests/test_nos_evaluation.py checks both against the problems.
TRAIN_EXAMPLES = {
    "full": {"nos_cifar100_effv2s": 45_000, "nos_tinyimagenet_effv2s": 90_000, "nos_flowers102_effv2s": 1_020,
             "nos_cars_effv2s": 7_144, "nos_caltech101_effv2s": 6_441},
    "smoke": {p: 256 for p in PROBLEMS},
}
# finalOptimizers.py's usage comment: total_steps=96000, warmup_steps=6400, hold=12800
WARMUP_FRACTION = 6_400 / 96_000
HOLD_FRACTION = 12_800 / 96_000

GENOMES = tuple([f"opt{i}" for i in range(1, 11)] + [f"a{i}" for i in range(1, 6)])
DECAY_GENOMES = tuple(f"opt{i}" for i in range(4, 11))  # those whose use_decay switches something (test checks)
NODECAY = "-nodecay"
# name -> (registry optimizer, fixed hyperparameters): the Keras defaults the authors' code would have used
BASELINES = {"adam": ("adam", {"eps": 1e-7}), "sgdm": ("momentum", {"momentum": 0.9}),
             "rmsprop": ("rmsprop", {"alpha": 0.9, "eps": 1e-7})}
SEARCHED = "searched"
SELECT_ON = ("final", "max")
EVAL_KEYS = {"rates", "select_on", "seeds", "searched", "grids"}
GRID_KEYS = {"problems", "arms"}
TUNE, RERUN = "tune", "rerun"


def arms(searched: int) -> tuple[str, ...]:
    """Every arm, in the order tables list them."""
    return (GENOMES + tuple(g + NODECAY for g in DECAY_GENOMES) + tuple(BASELINES)
            + tuple(f"{SEARCHED}{k}" for k in range(1, searched + 1)))


def searched_rank(arm: str) -> int | None:
    """k for "searched<k>", else None."""
    if arm.startswith(SEARCHED) and arm[len(SEARCHED):].isdigit():
        return int(arm[len(SEARCHED):])
    return None


def run_length(problem: str, scale: str, epochs: int, batch_size: int) -> dict[str, int]:
    """T, W and H of a run: the loop's steps (partial batches dropped) and the authors' proportions."""
    if problem not in TRAIN_EXAMPLES[scale]:
        raise unknown("NOS evaluation problem", problem, PROBLEMS)
    total = max(TRAIN_EXAMPLES[scale][problem] // batch_size, 1) * epochs
    return {"total_steps": total, "warmup_steps": max(round(WARMUP_FRACTION * total), 1),
            "hold_steps": round(HOLD_FRACTION * total)}


# ---- configuration -------------------------------------------------------------------------------------

def settings(pconfig: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `evaluation:` block, checked; None when the config has none."""
    cfg = pconfig.get("evaluation")
    if not cfg:
        return None
    check_keys("key in nos evaluation", cfg, EVAL_KEYS)
    select_on = cfg.get("select_on", "final")
    if select_on not in SELECT_ON:
        raise unknown("nos evaluation select_on", select_on, SELECT_ON)
    searched = dict(cfg.get("searched") or {})
    check_keys("key in nos evaluation searched", searched, {"search", "count"})
    count = int(searched.get("count", 0))
    names = arms(count)
    grids = []
    for grid in cfg.get("grids") or [{"problems": list(PROBLEMS), "arms": "all"}]:
        check_keys("key in a nos evaluation grid", grid, GRID_KEYS)
        chosen = names if grid.get("arms", "all") == "all" else tuple(grid["arms"])
        for a in chosen:
            if a not in names:
                raise unknown("nos evaluation arm", a, names)
        for p in grid["problems"]:
            if p not in PROBLEMS:
                raise unknown("nos evaluation problem", p, PROBLEMS)
        grids.append({"problems": tuple(grid["problems"]), "arms": chosen})
    seeds = dict(cfg.get("seeds") or {})
    check_keys("key in nos evaluation seeds", seeds, {"tune", "rerun"})
    rates = tuple(float(r) for r in cfg.get("rates", (10.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)))
    if not rates or min(rates) <= 0:
        raise ValueError(f"nos evaluation rates must be positive numbers, got {list(rates)}")
    return {"rates": rates, "select_on": select_on,
            "tune_seed": int(seeds.get("tune", 0)),
            "rerun_seeds": tuple(int(s) for s in seeds.get("rerun", (1, 2, 3, 4, 5))),
            "search": str(searched.get("search", "main")), "searched": count, "grids": grids}


# ---- paths -----------------------------------------------------------------------------------------------

def selection_path(results_dir: str, problem: str) -> Path:
    return Path(results_dir) / "nos" / "eval" / f"select-{problem}.json"


# ---- specs -----------------------------------------------------------------------------------------------

def _arm_optimizer(arm: str, length: Mapping[str, int], search_settings: Mapping[str, Any]) -> tuple[str, dict]:
    """(registry optimizer, hyperparameters without lr) of an arm."""
    nos_schedule = {"warmup_steps": length["warmup_steps"], "hold_steps": length["hold_steps"]}
    if arm in BASELINES:
        name, fixed = BASELINES[arm]
        return name, dict(fixed)
    if arm in GENOMES:
        return f"nos_{arm}", {"use_decay": True, **nos_schedule}
    if arm.endswith(NODECAY) and arm[:-len(NODECAY)] in DECAY_GENOMES:
        return f"nos_{arm[:-len(NODECAY)]}", {"use_decay": False, **nos_schedule}
    if searched_rank(arm):
        return "nos_genome", {"use_decay": True, **nos_schedule, **search_settings}
    raise unknown("nos evaluation arm", arm, arms(0) + (f"{SEARCHED}<k>",))


def template(arm: str, problem: str, scale: str, lr: float | None, seed: int, stage: str, device: str,
             search_settings: Mapping[str, Any], extra_tags: Mapping[str, Any] | None = None) -> dict:
    """make_spec's arguments for one run of an arm (lr None: filled from the selection)."""
    from optrepro import problems

    defaults = problems.info(problem).defaults[scale]
    epochs, batch_size = int(defaults["epochs"]), int(defaults["batch_size"])
    length = run_length(problem, scale, epochs, batch_size)
    optimizer, hparams = _arm_optimizer(arm, length, search_settings)
    if lr is not None:
        hparams["lr"] = float(lr)
    return {"paper": "nos", "problem": problem, "scale": scale, "optimizer": optimizer, "hparams": hparams,
            "schedule": {"name": "warmup_hold_cosine", "warmup_steps": length["warmup_steps"],
                         "hold_steps": length["hold_steps"]},
            "seed": seed, "device": device, "epochs": epochs, "batch_size": batch_size,  # (also sizes batches)
            "tags": {"arm": arm, "stage": stage, "seed": seed, **(extra_tags or {})}}


def plan(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any],
         searches: Mapping[str, Any]) -> list:
    """The evaluation's entries: tuning runs (plain specs; deferred on the search summary for searched arms)
    and re-runs of each winner (deferred on the problem's selection file)."""
    from optrepro.nos import stages
    from optrepro.planners.grid import device_for

    cfg = settings(pconfig)
    if cfg is None:
        return []
    results_dir = f"{global_config.get('results_dir', 'results')}/{scale}"
    search = None
    if cfg["searched"]:
        if cfg["search"] not in searches:
            raise unknown("nos search of the evaluation's searched arms", cfg["search"], searches)
        search = searches[cfg["search"]]
        if cfg["searched"] > search.particles:
            raise ValueError(f"nos evaluation: {cfg['searched']} searched genomes, but search "
                             f"{search.name!r} has {search.particles} particles")
    search_settings = search.settings if search is not None else {}
    entries: dict[tuple, Any] = {}
    for grid in cfg["grids"]:
        for problem in grid["problems"]:
            device = device_for(problem, scale, global_config)
            for arm in grid["arms"]:
                rank = searched_rank(arm)
                for i, lr in enumerate(cfg["rates"]):
                    t = template(arm, problem, scale, lr, cfg["tune_seed"], TUNE, device, search_settings,
                                 {"lr": lr, "sample": i})
                    if rank is None:
                        entries.setdefault((TUNE, problem, arm, i), planmod.make_spec(**t))
                    else:
                        key = f"nos/eval/{problem}/{arm}/{TUNE}-{i}"
                        entries.setdefault((TUNE, problem, arm, i), planmod.DeferredSpec(
                            key=key, template=t, depends_on=str(stages.summary_path(search)),
                            resolver="nos.searched_genome", tags=t["tags"]))
                for seed in cfg["rerun_seeds"]:
                    t = template(arm, problem, scale, None, seed, RERUN, device, search_settings)
                    entries.setdefault((RERUN, problem, arm, seed), planmod.DeferredSpec(
                        key=f"nos/eval/{problem}/{arm}/{RERUN}-seed{seed}", template=t,
                        depends_on=str(selection_path(results_dir, problem)), resolver="nos.eval_winner",
                        tags=t["tags"]))
    return list(entries.values())


@planmod.register_resolver("nos.searched_genome")
def resolve_searched(template: Mapping[str, Any], summary: Mapping[str, Any]) -> dict:
    """A searched arm's run: the template with the genome of rank k in the search's summary."""
    rank = searched_rank(template["tags"]["arm"])
    best = summary.get("best", [])
    if rank is None or rank > len(best):
        raise ValueError(f"arm {template['tags']['arm']!r}: the summary of search {summary.get('search')!r} "
                         f"ranks {len(best)} genomes")
    entry = best[rank - 1]
    tags = {**template["tags"], "genome_text": entry["text"], "search_particle": entry["particle"]}
    return planmod.make_spec(**{**template, "hparams": {**template["hparams"], "genome": entry["genome"]},
                                "tags": tags})


@planmod.register_resolver("nos.eval_winner")
def resolve_winner(template: Mapping[str, Any], selection: Mapping[str, Any]) -> dict:
    """A re-run: the template with its arm's winning hyperparameters (rate, and genome for searched arms)."""
    arm = template["tags"]["arm"]
    if arm not in selection["winners"]:
        raise unknown(f"arm of the selection file of {selection.get('problem')!r}", arm, selection["winners"])
    winner = selection["winners"][arm]
    return planmod.make_spec(**{**template, "hparams": dict(winner["hparams"]),
                                "tags": {**template["tags"], "lr": winner["hparams"]["lr"],
                                         "sample": winner["sample"]}})


# ---- selection (torch-free) ---------------------------------------------------------------------------------

def _valid_accuracy(run_dir: Path, result: Mapping[str, Any], select_on: str) -> float:
    """The value a tuning run is selected on: its final validation accuracy (NaN if it diverged) or the max
    over its evaluations after epoch 0 (a diverged run keeps its epochs before the divergence)."""
    if select_on == "max":
        from optrepro.nos.fitness import best_metric

        return best_metric(run_dir.parent.parent, run_dir.name, "valid/accuracy")
    det = result["deterministic"]
    if det["status"] == "diverged":
        return math.nan
    value = det.get("final", {}).get("valid", {}).get("accuracy")
    return float(value) if value is not None else math.nan


def tuning_candidates(manifests: Iterable[Path | str], problem: str, select_on: str) -> list[dict]:
    out = []
    for manifest in manifests:
        for entry in json.loads(Path(manifest).read_text())["runs"]:
            run_dir = Path(entry["dir"])
            result = json.loads((run_dir / "result.json").read_text())
            spec = result["spec"]
            if spec["problem"] != problem or spec["tags"].get("stage") != TUNE:
                continue
            out.append({"arm": spec["tags"]["arm"], "sample": int(spec["tags"]["sample"]),
                        "hparams": spec["optimizer"]["hparams"], "run_id": entry["run_id"],
                        "status": result["deterministic"]["status"],
                        "value": _valid_accuracy(run_dir, result, select_on)})
    return out


def select_winners(candidates: list[dict], rates: int) -> dict[str, dict]:
    """Per arm: the best validation accuracy over its `rates` tuning runs (NaN never wins; ties go to the rate
    listed first, as the authors' np.argmax)."""
    from optrepro.tune import select

    by_arm: dict[str, list[dict]] = {}
    for c in candidates:
        by_arm.setdefault(c["arm"], []).append(c)
    winners = {}
    for arm, runs in sorted(by_arm.items()):
        if sorted(c["sample"] for c in runs) != list(range(rates)):
            raise ValueError(f"arm {arm!r}: expected one tuning run per rate 0..{rates - 1}, got samples "
                             f"{sorted(c['sample'] for c in runs)}")
        winner = select(runs, higher_is_better=True)
        # JSON has no NaN: an arm whose every rate diverged (all_diverged) has no value
        winners[arm] = {**winner, "value": winner["value"] if math.isfinite(winner["value"]) else None}
    return winners


def _cmd_select(args) -> int:
    from optrepro.io import atomic_write_json
    from optrepro.workflow import plan_manifests

    manifests = plan_manifests(Path(args.plan), "nos", stage=TUNE, problem=args.problem)
    winners = select_winners(tuning_candidates(manifests, args.problem, args.select_on), args.rates)
    atomic_write_json(Path(args.output), {"problem": args.problem, "metric": f"{args.select_on} valid accuracy",
                                          "rates": args.rates, "winners": winners})
    print(f"optrepro nos eval-select: wrote {args.output}")
    return 0


def add_command(nos_sub) -> None:
    q = nos_sub.add_parser("eval-select", help="each arm's learning rate on a problem, by validation accuracy")
    q.add_argument("--plan", required=True, help="the plan directory (results/<scale>/plans/current)")
    q.add_argument("--problem", required=True)
    q.add_argument("--rates", type=int, required=True, help="how many rates each arm's tuning stage has")
    q.add_argument("--select-on", choices=SELECT_ON, default="final")
    q.add_argument("--output", required=True)
    q.set_defaults(func=_cmd_select)
