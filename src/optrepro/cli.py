"""`optrepro run|plan|list|pdf|data ...`: the commands Snakemake rules call (rules hold no logic)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run(args) -> int:
    from optrepro.runner import load_entries, run_batch

    if args.batch:
        from optrepro.workflow import batch_entries

        entries = batch_entries(Path(args.plan), args.batch)
    else:
        entries = load_entries(args.specs)
    if not entries:
        print("optrepro run: no specs given", file=sys.stderr)
        return 2
    return run_batch(entries, Path(args.results), manifest=Path(args.manifest) if args.manifest else None,
                     batch_name=args.batch or "", scale=args.scale or entries[0].get("scale", ""),
                     threads=args.threads, checkpoint_every_s=args.checkpoint_every, progress=args.progress)


def _cmd_list(args) -> int:
    from optrepro import optim, problems, schedules

    names = {
        "optimizers": optim.available,
        "problems": problems.available,
        "schedules": schedules.SCHEDULES.names,
        "controllers": schedules.CONTROLLERS.names,
    }[args.what]()
    print("\n".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optrepro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train one spec or a batch of specs in one process")
    run.add_argument("specs", nargs="*", type=Path, help="JSON files: a spec, a list of specs or {'specs': [...]}")
    run.add_argument("--plan", help="a plan file written by `optrepro plan` (with --batch)")
    run.add_argument("--batch", help="the batch key in the plan to run")
    run.add_argument("--results", required=True, help="results directory of this scale, e.g. results/smoke")
    run.add_argument("--manifest", help="write the batch manifest here once every run is complete")
    run.add_argument("--scale", help="label written into the manifest (default: the specs' scale)")
    run.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (Snakemake's {threads})")
    run.add_argument("--checkpoint-every", type=float, default=600.0, metavar="SECONDS",
                     help="wall-time interval between mid-epoch checkpoints (default 600)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="tqdm progress bar (default: when stderr is a terminal)")
    run.set_defaults(func=_cmd_run)

    lst = sub.add_parser("list", help="list registered names")
    lst.add_argument("what", choices=["optimizers", "problems", "schedules", "controllers"])
    lst.set_defaults(func=_cmd_list)

    from optrepro import bundle, paper, stopping, tune, workflow
    from optrepro.data import commands as data_commands
    from optrepro.nos import stages as nos_stages
    from optrepro.planners import fuzzy as fuzzy_planner

    for module in (workflow, paper, tune, data_commands, nos_stages, fuzzy_planner, stopping, bundle):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from optrepro.stopping import Interrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        # Bad input (unknown names, bad values) gets one clear line, not a traceback.
        print(f"optrepro {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # SIGTERM/SIGUSR1: what was finished is kept; a rerun resumes the rest
        print(f"optrepro {args.command}: stopped: {exc}", file=sys.stderr)
        return 128 + 15
    except KeyboardInterrupt:
        print(f"optrepro {args.command}: stopped by Ctrl-C", file=sys.stderr)
        return 128 + 2


if __name__ == "__main__":
    sys.exit(main())
