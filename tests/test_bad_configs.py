"""Malformed configurations are refused before any job, each with a message that names its file and its key.

Every case below mutates a copy of config/ (config.yaml, or a paper's config at full scale or in its smoke:
block) and runs, in this process, what the Snakefile runs when it is parsed, before Snakemake schedules a job
(validate_config, then load_plan, which plans both scales): types, unknown keys at every level, unknown names,
ranges, empty files and YAML errors. A case passes when that raises a ConfigError whose message names the file
and the key (or the bad name) and no run directory exists. The test prints how many were refused.
"""
import copy
import shutil
from pathlib import Path

import yaml

from optrepro.workflow import ConfigError, load_plan, read_yaml, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "workflow" / "schemas"
MIN_CASES = 60


def at(path: str, value):
    """A mutation setting the key at `path` ("experiments.0.optimizers.0.hparams.lr"); `DELETE` removes it."""
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if value is DELETE:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = copy.deepcopy(value)
        else:
            node[last] = copy.deepcopy(value)
    return mutate


DELETE = object()
ARM = "experiments.0.optimizers.0"  # core: digits_mlp, adam
SMOKE_ARM = "smoke.experiments.0.optimizers.0"
EXP = "experiments.0"
SMOKE_EXP = "smoke.experiments.0"
RAW = object()  # the case's mutation is the file's whole text

# (name, file under config/, mutation or RAW text, text the message must name)
CASES = [
    # --- config/config.yaml -------------------------------------------------------------------------------
    ("config empty", "config.yaml", (RAW, ""), "top level"),
    ("config yaml error", "config.yaml", (RAW, "scale: [smoke\n"), "line 1"),
    ("config top level a list", "config.yaml", (RAW, "- scale\n"), "top level"),
    ("scale unknown", "config.yaml", at("scale", "huge"), "scale"),
    ("scale a boolean", "config.yaml", at("scale", True), "scale"),
    ("config unknown key", "config.yaml", at("sclae", "smoke"), "sclae"),
    ("papers empty", "config.yaml", at("papers", []), "papers"),
    ("papers repeated", "config.yaml", at("papers", ["core", "core"]), "papers"),
    ("papers unknown name", "config.yaml", at("papers", ["core", "bogus"]), "bogus"),
    ("papers a string", "config.yaml", at("papers", "core"), "papers"),
    ("problems unknown name", "config.yaml", at("problems", ["digits_mlpx"]), "digits_mlpx"),
    ("problems empty", "config.yaml", at("problems", []), "problems"),
    ("batch_target_s a string", "config.yaml", at("batch_target_s.full", "fast"), "batch_target_s/full"),
    ("batch_target_s zero", "config.yaml", at("batch_target_s.smoke", 0), "batch_target_s/smoke"),
    ("batch_target_s missing scale", "config.yaml", at("batch_target_s.smoke", DELETE), "smoke"),
    ("batch_target_s unknown scale", "config.yaml", at("batch_target_s.medium", 3), "medium"),
    ("threads zero", "config.yaml", at("threads.smoke", 0), "threads/smoke"),
    ("threads a float", "config.yaml", at("threads.smoke", 1.5), "threads/smoke"),
    ("threads a boolean", "config.yaml", at("threads.full", True), "threads/full"),
    ("batch_max_runs zero", "config.yaml", at("batch_max_runs", 0), "batch_max_runs"),
    ("device unknown", "config.yaml", at("device", "tpu"), "device"),
    ("data_dir a number", "config.yaml", at("data_dir", 3), "data_dir"),
    ("imagenet_dir a list", "config.yaml", at("imagenet_dir", []), "imagenet_dir"),
    ("results_dir missing", "config.yaml", at("results_dir", DELETE), "results_dir"),
    # --- config/papers/core.yaml: the file and its top level -------------------------------------------
    ("paper empty", "papers/core.yaml", (RAW, ""), "plans no run"),
    ("paper yaml error", "papers/core.yaml", (RAW, "experiments:\n  - name: x\n   problem: y\n"), "line 3"),
    ("paper top level a list", "papers/core.yaml", (RAW, "- experiments\n"), "top level"),
    ("paper unknown key", "papers/core.yaml", at("experiment", []), "experiment"),
    ("planner unknown", "papers/core.yaml", at("planner", "gird"), "planner"),
    ("title a number", "papers/core.yaml", at("title", 3), "title"),
    ("order a string", "papers/core.yaml", at("order", "first"), "order"),
    ("smoke experiments empty", "papers/core.yaml", at("smoke.experiments", []), "plans no run"),
    ("smoke unknown key", "papers/core.yaml", at("smoke.experimentz", []), "experimentz"),
    ("smoke a number", "papers/core.yaml", at("smoke", 3), "smoke"),
    ("experiments a mapping", "papers/core.yaml", at("experiments", {"name": "x"}), "experiments"),
    # --- experiments, in both scales' blocks ------------------------------------------------------------
    ("experiment unknown key", "papers/core.yaml", at(f"{EXP}.epoch", 3), "epoch"),
    ("smoke experiment unknown key", "papers/core.yaml", at(f"{SMOKE_EXP}.seed", 3), "seed"),
    ("experiment without problem", "papers/core.yaml", at(f"{EXP}.problem", DELETE), "problem"),
    ("problem unknown", "papers/core.yaml", at(f"{EXP}.problem", "digits_mlpx"), "digits_mlpx"),
    ("smoke problem unknown", "papers/core.yaml", at(f"{SMOKE_EXP}.problem", "digits_mlpx"), "digits_mlpx"),
    ("seeds repeated", "papers/core.yaml", at(f"{EXP}.seeds", [1, 1]), "seeds"),
    ("smoke seeds repeated", "papers/core.yaml", at(f"{SMOKE_EXP}.seeds", [1, 1]), "seeds"),
    ("seeds zero", "papers/core.yaml", at(f"{EXP}.seeds", 0), "seeds"),
    ("seeds a string", "papers/core.yaml", at(f"{EXP}.seeds", "3"), "seeds"),
    ("seeds negative", "papers/core.yaml", at(f"{SMOKE_EXP}.seeds", [-1]), "seeds"),
    ("seeds a boolean", "papers/core.yaml", at(f"{SMOKE_EXP}.seeds", True), "seeds"),
    ("epochs zero", "papers/core.yaml", at(f"{EXP}.epochs", 0), "epochs"),
    ("epochs a float", "papers/core.yaml", at(f"{SMOKE_EXP}.epochs", 2.5), "epochs"),
    ("epochs a string", "papers/core.yaml", at(f"{SMOKE_EXP}.epochs", "3"), "epochs"),
    ("epochs a boolean", "papers/core.yaml", at(f"{EXP}.epochs", True), "epochs"),
    ("batch_size zero", "papers/core.yaml", at(f"{EXP}.batch_size", 0), "batch_size"),
    ("grad_accum zero", "papers/core.yaml", at(f"{SMOKE_EXP}.grad_accum", 0), "grad_accum"),
    ("eval_every negative", "papers/core.yaml", at(f"{EXP}.eval_every", -1), "eval_every"),
    ("precision unknown", "papers/core.yaml", at(f"{EXP}.precision", "fp8"), "precision"),
    ("stage with spaces", "papers/core.yaml", at(f"{EXP}.stage", "Main Stage"), "stage"),
    ("enabled a string", "papers/core.yaml", at(f"{EXP}.enabled", "yes"), "enabled"),
    ("schedule unknown", "papers/core.yaml", at(f"{EXP}.schedule", {"name": "cosinex"}), "cosinex"),
    ("schedule unknown argument", "papers/core.yaml", at(f"{SMOKE_EXP}.schedule",
                                                         {"name": "cosine", "min_factr": 0.1}), "min_factr"),
    ("schedule argument a boolean", "papers/core.yaml", at(f"{EXP}.schedule",
                                                           {"name": "cosine", "min_factor": True}), "min_factor"),
    ("schedule argument out of range", "papers/core.yaml", at(f"{EXP}.schedule",
                                                              {"name": "cosine", "min_factor": 2.0}), "min_factor"),
    ("controller unknown", "papers/core.yaml", at(f"{EXP}.controllers", [{"name": "early_stoping"}]),
     "early_stoping"),
    ("controller argument a string", "papers/core.yaml",
     at(f"{SMOKE_EXP}.controllers", [{"name": "early_stopping", "patience": "x"}]), "patience"),
    ("controller unknown argument", "papers/core.yaml",
     at(f"{EXP}.controllers", [{"name": "early_stopping", "patienc": 3}]), "patienc"),
    ("controller monitors a metric the problem does not log", "papers/core.yaml",
     at(f"{EXP}.controllers", [{"name": "early_stopping", "monitor": "valid/reg_loss"}]), "reg_loss"),
    ("controller monitors a misspelt metric", "papers/core.yaml",
     at(f"{SMOKE_EXP}.controllers", [{"name": "reduce_on_plateau", "monitor": "valid/acuracy"}]), "acuracy"),
    # --- problem arguments ---------------------------------------------------------------------------------
    ("hidden a string", "papers/core.yaml", at(f"{EXP}.problem_args", {"hidden": "big"}), "hidden"),
    ("hidden zero", "papers/core.yaml", at(f"{SMOKE_EXP}.problem_args", {"hidden": 0}), "hidden"),
    ("hidden a float", "papers/core.yaml", at(f"{EXP}.problem_args", {"hidden": 32.5}), "hidden"),
    ("dropout above 1", "papers/core.yaml", at(f"{EXP}.problem_args", {"dropout": 1.5}), "dropout"),
    ("dropout negative", "papers/core.yaml", at(f"{SMOKE_EXP}.problem_args", {"dropout": -0.1}), "dropout"),
    ("problem argument unknown", "papers/core.yaml", at(f"{EXP}.problem_args", {"hiden": 32}), "hiden"),
    ("problem_args a list", "papers/core.yaml", at(f"{EXP}.problem_args", [32]), "problem_args"),
    # --- optimizer arms and hyperparameters ---------------------------------------------------------------
    ("optimizers empty", "papers/core.yaml", at(f"{EXP}.optimizers", []), "optimizers"),
    ("arm unknown key", "papers/core.yaml", at(f"{ARM}.lr", 0.1), "lr"),
    ("arm without name", "papers/core.yaml", at(f"{ARM}.name", DELETE), "name"),
    ("optimizer unknown", "papers/core.yaml", at(f"{ARM}.name", "adamx"), "adamx"),
    ("smoke optimizer unknown", "papers/core.yaml", at(f"{SMOKE_ARM}.name", "adamx"), "adamx"),
    ("hyperparameter unknown", "papers/core.yaml", at(f"{ARM}.hparams.learning_rate", 0.1), "learning_rate"),
    ("lr a boolean", "papers/core.yaml", at(f"{ARM}.hparams.lr", True), "'lr'"),
    ("smoke lr a boolean", "papers/core.yaml", at(f"{SMOKE_ARM}.hparams.lr", True), "'lr'"),
    ("lr negative", "papers/core.yaml", at(f"{ARM}.hparams.lr", -0.1), "'lr'"),
    ("lr zero", "papers/core.yaml", at(f"{SMOKE_ARM}.hparams.lr", 0), "'lr'"),
    ("lr null", "papers/core.yaml", at(f"{ARM}.hparams.lr", None), "'lr'"),
    ("lr a list", "papers/core.yaml", at(f"{ARM}.hparams.lr", [0.1, 0.2]), "'lr'"),
    ("lr a word", "papers/core.yaml", at(f"{SMOKE_ARM}.hparams.lr", "fast"), "'lr'"),
    ("lr infinite", "papers/core.yaml", at(f"{ARM}.hparams.lr", float("inf")), "'lr'"),
    ("beta1 above 1", "papers/core.yaml", at(f"{ARM}.hparams.beta1", 1.5), "beta1"),
    ("eps negative", "papers/core.yaml", at(f"{SMOKE_ARM}.hparams.eps", -1e-8), "eps"),
    ("weight_decay negative", "papers/core.yaml", at(f"{ARM}.hparams.weight_decay", -0.1), "weight_decay"),
    ("semantics unknown", "papers/core.yaml", at(f"{ARM}.hparams.semantics", "keras"), "semantics"),
    ("sgd has no momentum", "papers/core.yaml", at("experiments.0.optimizers.1.hparams.momentum", 0.9),
     "momentum"),
    ("hparams a list", "papers/core.yaml", at(f"{ARM}.hparams", [0.1]), "hparams"),
    # --- the other planners' configs ----------------------------------------------------------------------
    ("valley unknown key", "papers/crowded_valley.yaml", at("grid", []), "grid"),
    ("valley version unknown", "papers/crowded_valley.yaml", at("version", "v3"), "version"),
    ("valley smoke seeds repeated", "papers/crowded_valley.yaml", at("smoke.seeds.oneshot", [42, 42]), "oneshot"),
    ("valley budget zero", "papers/crowded_valley.yaml", at("smoke.budgets.small", 0), "small"),
    ("valley grid unknown key", "papers/crowded_valley.yaml", at("smoke.grids.0.optimiser", ["adam"]),
     "optimiser"),
    ("valley full-scale optimizer unknown", "papers/crowded_valley.yaml", at("grids.0.optimizers", ["adamx"]),
     "adamx"),
    ("nos unknown key", "papers/nos.yaml", at("serach", {}), "serach"),
]


def _prepare(tmp: Path, file: str, mutation) -> dict:
    """A copy of config/ with one mutation; the config as Snakemake would hold it (scale=smoke)."""
    shutil.copytree(ROOT / "config", tmp / "config")
    config_path = tmp / "config" / "config.yaml"
    base = yaml.safe_load(config_path.read_text())
    paper = Path(file).stem
    base["papers"] = ["core"] if file == "config.yaml" or paper == "core" else ["core", paper]
    base["results_dir"] = str(tmp / "results")
    config_path.write_text(yaml.safe_dump(base))
    path = tmp / "config" / file
    if isinstance(mutation, tuple) and mutation[0] is RAW:
        path.write_text(mutation[1])
    else:
        doc = yaml.safe_load(path.read_text())
        mutation(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = read_yaml(config_path)
    if isinstance(config, dict) and config.get("scale") == base["scale"]:
        config["scale"] = "smoke"  # as `--config scale=smoke` (the README's smoke command), unless that is the case
    return config


def refusal(tmp: Path, file: str, mutation) -> str | None:
    """The message the configuration is refused with before any job, or None when it is accepted."""
    try:
        config = _prepare(tmp, file, mutation)
        validate_config(config, tmp / "config", SCHEMAS)
        load_plan(config, tmp / "config")
    except ConfigError as exc:
        return str(exc)
    return None


def test_malformed_configs_are_refused_before_any_job_naming_file_and_key(tmp_path, capsys):
    assert len(CASES) >= MIN_CASES and len({c[0] for c in CASES}) == len(CASES)
    problems = []
    for i, (name, file, mutation, key) in enumerate(CASES):
        tmp = tmp_path / f"case{i}"
        message = refusal(tmp, file, mutation)
        if message is None:
            problems.append(f"{name}: accepted")
        elif Path(file).name not in message or key not in message:
            problems.append(f"{name}: the message does not name {Path(file).name!r} and {key!r}: {message}")
        elif (tmp / "results" / "smoke" / "runs").exists():
            problems.append(f"{name}: a run directory exists")
    refused = len(CASES) - len(problems)
    with capsys.disabled():
        print(f"\n{refused}/{len(CASES)} malformed configs refused before any job, each naming its file and key")
    assert not problems, "\n".join(problems)


def test_the_unmutated_config_is_accepted(tmp_path):
    assert refusal(tmp_path, "papers/core.yaml", lambda doc: None) is None


def test_a_message_names_the_range_and_the_choices(tmp_path):
    lr = refusal(tmp_path / "lr", "papers/core.yaml", at(f"{ARM}.hparams.lr", True))
    assert "True is a boolean" in lr and "a number > 0" in lr and "optimizer 'adam'" in lr
    dropout = refusal(tmp_path / "dropout", "papers/core.yaml", at(f"{EXP}.problem_args", {"dropout": 1.5}))
    assert "in [0, 1)" in dropout
    name = refusal(tmp_path / "name", "papers/core.yaml", at(f"{ARM}.name", "adamx"))
    assert "Valid choices:" in name and "adabelief" in name
    key = refusal(tmp_path / "key", "papers/core.yaml", at(f"{EXP}.epoch", 3))
    assert "valid keys:" in key and "epochs" in key
    # an alternative of the schema (an int or a list of unique ints): the message says what is wrong inside the
    # alternative the value's type selects, not only "not valid under any of the given schemas"
    repeated = refusal(tmp_path / "repeated", "papers/core.yaml", at(f"{EXP}.seeds", [1, 1]))
    assert "at experiments/0/seeds: [1, 1] has non-unique elements" in repeated, repeated
    item = refusal(tmp_path / "item", "papers/core.yaml", at(f"{EXP}.seeds", [1, "2"]))
    assert "at experiments/0/seeds/1: '2' is not of type 'integer'" in item, item


def test_a_smoke_dry_run_refuses_an_unknown_optimizer_in_the_full_scale_block(tmp_path):
    from test_workflow import snakemake

    _prepare(tmp_path, "papers/core.yaml", at(f"{ARM}.name", "adamx"))
    proc = snakemake(tmp_path, "-n", "--config", "scale=smoke", "papers=[core]", f"results_dir={tmp_path}/results")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "core.yaml (at full scale)" in out and "adamx" in out, out[-3000:]
    assert "run_batch" not in out  # refused while the Snakefile is parsed: no job is listed, let alone run
