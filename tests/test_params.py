"""Hyperparameter and problem-argument declarations (optrepro.params): what each accepts, the registries' entries
against their own defaults and implementations, and make_spec refusing what they refuse."""
import pytest

from optrepro import optim, params, problems
from optrepro.plan import make_spec


def test_a_boolean_is_not_a_number_and_ranges_are_checked():
    lr = params.positive()
    for bad in (True, False, 0, -1e-3, float("inf"), float("nan"), None, [1e-3], "fast"):
        assert lr.problem(bad), bad
    for good in (1e-3, 1, "1e-3"):  # YAML 1.1 reads 1e-3 (no dot) as a string: it is a number here
        assert lr.problem(good) is None, good
    assert params.integer(1).problem(2.0) and params.integer(1).problem(True) and params.integer(1).problem(0)
    assert params.choice(0, 1, 2).problem(True)  # True == 1 in Python, not here
    assert params.pair(params.DECAY).problem([0.9]) and params.pair(params.DECAY).problem([0.9, 1.0])
    assert params.pair(params.DECAY).problem([0.9, 0.999]) is None


def test_the_message_names_the_key_the_value_and_what_is_valid():
    with pytest.raises(ValueError) as exc:
        params.unit_interval(high_open=True).check("argument 'dropout' of problem 'x'", 1.5)
    assert str(exc.value) == "argument 'dropout' of problem 'x': 1.5 is out of range; valid: a number in [0, 1)"


def _every_declared_default():
    """(registry, name, key, default, declaration) of every optimizer hyperparameter and problem argument."""
    out = []
    for name in optim.available():
        info = optim.info(name)
        out += [("optimizer", name, key, value, info.hparam(key)) for key, value in info.defaults.items()]
    for name in problems.available():
        info = problems.info(name)
        out += [("problem", name, key, value, info.arg(key)) for key, value in info.args.items()]
    return out


@pytest.mark.parametrize("kind, name, key, default, param", _every_declared_default(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_default_satisfies_its_declaration(kind, name, key, default, param):
    assert param.problem(default) is None
    # a string or a null default means a choice among values, a form, or "the run's": each is declared
    if isinstance(default, str) or default is None:
        assert param.kind == "choice" or param.pattern or param.nullable, f"{kind} {name}.{key} is not declared"


def test_declared_choices_are_the_implementations_own():
    from optrepro.nos import space
    from optrepro.optim import caadam, crowded_valley, fuzzy, fuzzy_controller, line_search, lookahead, nos_expr
    from optrepro.problems import imagenet

    def choices(optimizer, key):
        return set(optim.info(optimizer).hparam(key).choices)

    assert choices("caadam_additive", "strategy") == set(caadam.STRATEGIES)
    assert choices("caadam_additive", "mode") == set(caadam.MODES)
    assert choices("caadam_additive", "one_d") == set(caadam.ONE_D)
    assert choices("adam", "semantics") == set(crowded_valley.SEMANTICS) == set(lookahead.SEMANTICS)
    assert choices("fuzzy_second_order", "fd_mode") == choices("fd_second_order", "fd_mode") == set(fuzzy.FD_MODES)
    assert choices("fuzzy_second_order", "rule_base") == set(fuzzy_controller.RULE_BASES)
    assert choices("sls", "mode") == set(line_search.MODES)
    assert choices("sls", "reset_option") == set(line_search.RESET_OPTIONS)
    assert choices("adasls", "base_opt") == set(line_search.AdaSLS.BASE_OPTS)
    assert choices("nos_opt1", "momentum_schedule") == set(nos_expr.MOMENTUM_SCHEDULES)
    assert choices("nos_genome", "nesterov_form") == set(nos_expr.NESTEROV_FORMS)
    assert choices("nos_genome", "ema_form") == set(nos_expr.EMA_FORMS)
    for form in choices("nos_opt1", "opt1_form"):
        space.final_genome("opt1", form)
    assert set(problems.info("fuzzy_imagenet_effb3").arg("train_crop").choices) == set(imagenet.TRAIN_CROPS)


def test_a_declaration_that_refuses_its_own_default_is_refused_at_registration():
    with pytest.raises(ValueError, match="default of hyperparameter 'lr'"):
        optim.registry.OptimizerInfo(name="x", target="m:a", defaults={"lr": 0.0},
                                     hparam_types={"lr": params.positive()})
    with pytest.raises(ValueError, match="hparam_types"):
        optim.registry.OptimizerInfo(name="x", target="m:a", defaults={"lr": 1e-3},
                                     hparam_types={"l_r": params.positive()})


def spec(**kw):
    return make_spec(**{**dict(paper="core", problem="digits_mlp", scale="smoke", optimizer="adam"), **kw})


@pytest.mark.parametrize("change, key", [
    ({"hparams": {"lr": True}}, "'lr'"),
    ({"hparams": {"betas": [0.9]}, "optimizer": "caadam_additive"}, "'betas'"),
    ({"hparams": {"mode": "keras"}, "optimizer": "caadam_additive"}, "'mode'"),
    ({"hparams": {"k": 0}, "optimizer": "lookahead_momentum"}, "'k'"),
    ({"hparams": {"c": 1.0}, "optimizer": "sls"}, "'c'"),
    ({"problem_args": {"hidden": "big"}}, "'hidden'"),
    ({"problem_args": {"dropout": 1.5}}, "'dropout'"),
    ({"seed": True}, "seed"),
    ({"seed": -1}, "seed"),
    ({"epochs": 2.5}, "epochs"),
    ({"batch_size": "64"}, "batch_size"),
    ({"schedule": {"name": "cosine", "min_factor": True}}, "min_factor"),
])
def test_make_spec_refuses_what_the_declarations_refuse(change, key):
    with pytest.raises(ValueError, match=key):
        spec(**change)


def test_valid_values_keep_their_run_ids():
    # the checks add no normalisation: what was valid before plans the same runs
    assert spec(hparams={"lr": "1e-3"}) == spec(hparams={"lr": 1e-3})
    assert spec(hparams={"lr": 1})["optimizer"]["hparams"]["lr"] == 1.0


def test_a_number_yaml_left_as_a_string_is_stored_as_the_number():
    """YAML 1.1 reads `1e-4` as a string: it is valid, and the spec (and its run id) must hold the float, or the
    run computes with a string (the l2 penalty crashed on `'1e-4' * tensor`)."""
    common = dict(paper="p", problem="caadam_cifar100_resnet20", scale="smoke", optimizer="adam")
    as_text = make_spec(**common, problem_args={"l2": "1e-4"}, hparams={"lr": "1e-3"},
                        schedule={"name": "cosine", "min_factor": "1e-3"})
    as_number = make_spec(**common, problem_args={"l2": 1e-4}, hparams={"lr": 1e-3},
                          schedule={"name": "cosine", "min_factor": 1e-3})
    assert as_text == as_number
    assert as_text["problem_args"]["l2"] == 1e-4 and as_text["schedule"]["args"]["min_factor"] == 1e-3
