"""The grid planner: every experiment x optimizer arm x seed (the default planner of a paper config)."""
from __future__ import annotations

from typing import Any, Mapping

from optrepro import plan as planmod
from optrepro import problems
from optrepro.planners import register_planner
from optrepro.registry import UnknownNameError, check_keys

EXPERIMENT_KEYS = {"name", "problem", "problem_args", "optimizers", "seeds", "schedule", "controllers", "epochs",
                   "batch_size", "grad_accum", "eval_every", "precision", "stage", "enabled"}
ARM_KEYS = {"label", "name", "hparams"}


def device_for(problem: str, scale: str, global_config: Mapping[str, Any]) -> str:
    """Full-scale runs of problems that want a GPU use the configured device; everything else the CPU."""
    if scale == "full" and problems.info(problem).gpu:
        return global_config.get("device", "cuda")
    return "cpu"


def seed_list(seeds: int | list[int]) -> list[int]:
    """`seeds: 5` means seeds 0..4; a list is taken as is, and a seed given twice is refused (it would be one run)."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list, tuple)):
        raise ValueError(f"seeds: {seeds!r} is neither a count nor a list of seeds")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds: {seeds} runs no seed; valid: a count >= 1 or a list of seeds")
        return list(range(seeds))
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1}, key=str)
    if repeated:
        raise ValueError(f"seeds: {list(seeds)} gives seed {repeated[0]!r} more than once; valid: distinct seeds")
    return list(seeds)


@register_planner("grid")
def grid_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list[dict]:
    """Every experiment x optimizer arm x seed. Arms of one experiment share seeds, so tests can be paired."""
    specs = []
    for i, exp in enumerate(pconfig.get("experiments", [])):
        check_keys(f"experiment key in paper {pconfig['paper']!r}", exp, EXPERIMENT_KEYS)
        if not exp.get("enabled", True):
            continue
        for j, arm in enumerate(exp["optimizers"]):
            where = f"experiments[{i}] ({exp.get('name')!r}), optimizers[{j}] ({arm.get('label', arm.get('name'))!r})"
            try:
                check_keys(f"optimizer arm key in experiment {exp['name']!r}", arm, ARM_KEYS)
                for seed in seed_list(exp.get("seeds", 1)):
                    specs.append(planmod.make_spec(
                        paper=pconfig["paper"], problem=exp["problem"], scale=scale, optimizer=arm["name"],
                        hparams=arm.get("hparams"), schedule=exp.get("schedule"),
                        controllers=exp.get("controllers", ()), seed=seed, epochs=exp.get("epochs"),
                        batch_size=exp.get("batch_size"), grad_accum=exp.get("grad_accum"),
                        eval_every=exp.get("eval_every"), device=device_for(exp["problem"], scale, global_config),
                        precision=exp.get("precision", "fp32"), problem_args=exp.get("problem_args"),
                        tags={"experiment": exp["name"], "arm": arm.get("label", arm["name"]), "seed": seed,
                              "stage": exp.get("stage", "main")}))
            except UnknownNameError as exc:
                raise UnknownNameError(f"{where}: {exc}") from None
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{where}: {exc}") from None
    return specs
