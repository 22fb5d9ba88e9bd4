"""Schedules against the factors logged in the Crowded Valley runs (lr_sched_factors), controllers against Keras's
callback semantics on scripted metric sequences, and checkpoint round trips."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from optrepro import schedules
from optrepro.registry import UnknownNameError

SPE = 7  # steps per epoch; epoch-wise schedules must not depend on it


def epoch_factor(schedule, epoch, num_epochs, steps_per_epoch=SPE):
    """The factor in force during epoch `epoch` (every step of it must agree)."""
    values = {schedule(epoch * steps_per_epoch + i, num_epochs * steps_per_epoch, steps_per_epoch)
              for i in range(steps_per_epoch)}
    assert len(values) == 1, f"factor changes within epoch {epoch}: {values}"
    return values.pop()


def test_import_does_not_pull_torch():
    code = "import sys, optrepro.schedules; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- open loop -------------------------------------------------------------------------------------------

def test_constant():
    f = schedules.build_schedule("constant")
    assert {f(s, 100, 10) for s in range(100)} == {1.0}


def test_cosine_matches_logged_factors_at_350_epochs():
    f = schedules.build_schedule("cosine", unit="epoch")
    assert epoch_factor(f, 0, 350) == 1.0
    assert round(epoch_factor(f, 1, 350), 5) == 0.99998
    assert epoch_factor(f, 175, 350) == pytest.approx(0.5, abs=1e-12)
    for e in range(1, 351):
        assert epoch_factor(f, e, 350) == pytest.approx(0.5 * (1 + math.cos(math.pi * e / 350)), abs=1e-12)


def test_cosine_step_unit_is_continuous():
    f = schedules.build_schedule("cosine")
    assert f(0, 100, 7) == 1.0 and f(50, 100, 7) == pytest.approx(0.5) and f(100, 100, 7) == pytest.approx(0.0)
    g = schedules.build_schedule("cosine", min_factor=0.1)
    assert g(100, 100, 7) == pytest.approx(0.1)


def test_warm_restarts_cycle_starts_and_logged_end_factors():
    f = schedules.build_schedule("cosine_wr")
    starts = [0, 10, 30, 70, 150, 310]
    for s in starts:
        assert epoch_factor(f, s, 400) == 1.0, f"no restart at epoch {s}"
        if s:
            assert epoch_factor(f, s - 1, 400) < 0.05, f"epoch {s - 1} is not the end of a cycle"
    restarts = [e for e in range(1, 400) if epoch_factor(f, e, 400) > epoch_factor(f, e - 1, 400)]
    assert restarts == starts[1:]
    # not fitted to the run: the factor at e = E (logged: 0.50 for E = 50, 0.69 for E = 100; the others derived)
    for num_epochs, logged in [(50, 0.50), (100, 0.69), (160, 0.99), (200, 0.78), (350, 0.96)]:
        value = f(num_epochs * SPE, num_epochs * SPE, SPE)
        assert round(value, 2) == logged, (num_epochs, value)
    assert schedules.warm_restart_cycle(100, 10, 2) == (70, 80)


def test_trapezoid_matches_logged_factors():
    f = schedules.build_schedule("trapezoid")
    # E = 100: 0.1 ... 1.0 at e = 1..10, flat, 10/11 ... 1/11 at e = 91..100
    for e in range(1, 11):
        assert epoch_factor(f, e, 100) == pytest.approx(e / 10)
    assert {epoch_factor(f, e, 100) for e in range(10, 91)} == {1.0}
    for e in range(91, 101):
        assert epoch_factor(f, e, 100) == pytest.approx((101 - e) / 11)
    # E = 350: 1/35 ... at e = 1..35, 35/36 ... 1/36 at e = 316..350
    assert epoch_factor(f, 1, 350) == pytest.approx(1 / 35)
    assert epoch_factor(f, 35, 350) == 1.0
    assert epoch_factor(f, 316, 350) == pytest.approx(35 / 36)
    assert epoch_factor(f, 350, 350) == pytest.approx(1 / 36)


def test_deepobs_epoch0_convention():
    # DeepOBS inserts {0: 1.0}: the trapezoid's first epoch runs at the full lr, before the warm-up
    assert epoch_factor(schedules.build_schedule("trapezoid"), 0, 100) == 1.0
    assert epoch_factor(schedules.build_schedule("trapezoid", deepobs_epoch0=False), 0, 100) == 0.0


def test_warmup_cosine():
    f = schedules.build_schedule("warmup_cosine", warmup_steps=10, min_factor=0.05)
    assert [f(s, 110, 5) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10, 110, 5) == 1.0
    assert f(60, 110, 5) == pytest.approx(0.05 + 0.95 * 0.5)
    assert f(110, 110, 5) == pytest.approx(0.05)
    after = [f(s, 110, 5) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    g = schedules.build_schedule("warmup_cosine", warmup_fraction=0.1)
    assert g(0, 100, 5) == pytest.approx(0.1) and g(10, 100, 5) == 1.0


def test_warmup_hold_cosine_is_the_nos_authors_schedule():
    f = schedules.build_schedule("warmup_hold_cosine", warmup_steps=4, hold_steps=3)
    total = 17  # warm-up 0, 1/4, 2/4, 3/4; 1 through step 7; then (1 + cos(pi (t - 7) / 10)) / 2
    assert [f(t, total, 1) for t in range(8)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    for t in range(8, total):
        assert f(t, total, 1) == pytest.approx(0.5 * (1 + math.cos(math.pi * (t - 7) / 10)))
    with pytest.raises(ValueError, match="hold_steps"):
        schedules.build_schedule("warmup_hold_cosine", hold_steps=-1)


@pytest.mark.parametrize("name,args,match", [
    ("cosinee", {}, "cosine"),
    ("cosine", {"t0": 3}, "min_factor"),
    ("cosine_wr", {"unit": "epochs"}, "epoch"),
])
def test_bad_schedule_input_names_the_choices(name, args, match):
    with pytest.raises(UnknownNameError, match=match):
        schedules.build_schedule(name, **args)


def test_bad_schedule_values_are_refused():
    with pytest.raises(ValueError, match="t_mult"):
        schedules.build_schedule("cosine_wr", t_mult=0.5)
    with pytest.raises(ValueError, match="warmup_fraction"):
        schedules.build_schedule("trapezoid", warmup_fraction=0.0)


# --- closed loop: Keras semantics --------------------------------------------------------------------------

def drive(controller, values, key="valid/loss", start_epoch=1):
    """Feed `values` as the evaluations after training epochs start_epoch, start_epoch + 1, ... (the loop's
    count: epoch 1 is Keras's on_epoch_end(0))."""
    trace = []
    for epoch, value in enumerate(values, start=start_epoch):
        controller.observe(epoch, {key: value, "train/loss": 0.0})
        trace.append((controller.lr_factor, controller.wait, controller.should_stop))
    return trace


# Worked by hand from tf.keras.callbacks.ReduceLROnPlateau.on_epoch_end with patience=2, factor=0.5,
# min_delta=0.01, cooldown=1, min_lr=0.2: cooldown decrements before the check and resets wait; wait grows in
# the epoch the cooldown ends; at the floor (lr == min_lr) nothing is reset any more.
PLATEAU_LOSSES = [1.00, 0.95, 0.945, 0.96, 0.95, 0.95, 0.90, 0.91, 0.91, 0.91, 0.91, 0.91]
PLATEAU_LR = [1, 1, 1, .5, .5, .25, .25, .25, .2, .2, .2, .2]
PLATEAU_WAIT = [0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 2, 3]


def plateau():
    return schedules.build_controller("reduce_on_plateau", patience=2, factor=0.5, min_delta=0.01, cooldown=1,
                                      min_lr_factor=0.2)


def test_reduce_on_plateau_follows_keras():
    trace = drive(plateau(), PLATEAU_LOSSES)
    assert [t[0] for t in trace] == pytest.approx(PLATEAU_LR)
    assert [t[1] for t in trace] == PLATEAU_WAIT
    assert not any(t[2] for t in trace)


def test_reduce_on_plateau_max_mode_and_nan():
    c = schedules.build_controller("reduce_on_plateau", monitor="valid/accuracy", patience=1, factor=0.1)
    assert c.mode == "max"  # Keras "auto": metrics named like accuracy are maximised
    trace = drive(c, [0.5, 0.6, 0.6, float("nan"), 0.7], key="valid/accuracy")
    assert [t[0] for t in trace] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


def test_early_stopping_follows_keras():
    c = schedules.build_controller("early_stopping", monitor="valid/accuracy", patience=2)
    trace = drive(c, [0.5, 0.6, 0.6, 0.55], key="valid/accuracy")
    assert [t[2] for t in trace] == [False, False, False, True]
    assert (c.best, c.best_epoch, c.stopped_epoch) == (0.6, 2, 4)  # the loop's epochs: Keras's 1 and 3, plus 1

    zero = schedules.build_controller("early_stopping", patience=0)
    assert [t[2] for t in drive(zero, [1.0, 0.9, 0.9])] == [False, False, True]

    delta = schedules.build_controller("early_stopping", patience=1, min_delta=0.1)
    assert [t[2] for t in drive(delta, [1.0, 0.95])] == [False, True]  # 0.05 better is not better

    # Keras 3: best starts at -inf; an improvement that does not beat the baseline keeps `wait` counting
    baseline = schedules.build_controller("early_stopping", monitor="valid/accuracy", patience=1, baseline=0.7)
    assert [t[2] for t in drive(baseline, [0.65, 0.64], key="valid/accuracy")] == [False, True]
    beaten = schedules.build_controller("early_stopping", monitor="valid/accuracy", patience=1, baseline=0.7)
    assert [t[1] for t in drive(beaten, [0.65, 0.72, 0.70], key="valid/accuracy")] == [1, 0, 1]

    late = schedules.build_controller("early_stopping", patience=0, start_from_epoch=2)
    assert [t[2] for t in drive(late, [1.0, 2.0, 3.0, 4.0])] == [False, False, False, True]


def test_keras_controllers_ignore_the_initial_evaluation():
    """train.py evaluates the initial weights as epoch 0; Keras never sees them. A low initial loss must not
    become the best, or every trained epoch would count as a bad one."""
    stop = schedules.build_controller("early_stopping", patience=2)
    trace = drive(stop, [0.1, 1.0, 0.9, 0.95, 0.96], start_epoch=0)
    assert [t[2] for t in trace] == [False, False, False, False, True]
    assert (stop.best, stop.best_epoch, stop.stopped_epoch) == (0.9, 2, 4)
    plateau = schedules.build_controller("reduce_on_plateau", patience=1, factor=0.5)
    assert [t[0] for t in drive(plateau, [0.1, 1.0, 0.9], start_epoch=0)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("patience, start_from_epoch, best_epoch, epochs_run", [
    (15, 0, 20, 35),    # the ResNet callbacks: 15 epochs past the best one
    (25, 12, 3, 38),    # California: epochs 1-12 are not monitored, so the first counted best is epoch 13
])
def test_early_stopping_epoch_count_is_keras_len_history(patience, start_from_epoch, best_epoch, epochs_run):
    """The notebooks' epochs_to_converge = len(history): with the loss falling until `best_epoch` (1-based) and
    rising after, Keras (0-based k) records its best at max(best_epoch, start_from_epoch + 1) - 1 and stops
    `patience` epochs later; the loop's epoch count at the stop must be Keras's len(history)."""
    c = schedules.build_controller("early_stopping", patience=patience, min_delta=1e-5,
                                   start_from_epoch=start_from_epoch)
    epoch = 0
    while not c.should_stop and epoch < 1000:
        epoch += 1
        c.observe(epoch, {"valid/loss": abs(epoch - best_epoch) + 1.0})
    keras_best = max(best_epoch - 1, start_from_epoch)  # the first monitored epoch is a best by definition
    assert epoch == keras_best + patience + 1 == epochs_run


@pytest.mark.parametrize("make,values", [
    (plateau, PLATEAU_LOSSES),
    (lambda: schedules.build_controller("early_stopping", patience=3), [1.0, 0.9, 0.95, 0.8, 0.85, 0.9, 0.9, 0.9]),
])
def test_controller_state_round_trip(make, values):
    uninterrupted = make()
    expected = drive(uninterrupted, values)
    for cut in range(1, len(values)):
        first = make()
        head = drive(first, values[:cut])
        state = json.loads(json.dumps(first.state_dict()))  # plain data only
        assert all(isinstance(v, (int, float, bool, str, type(None))) for v in state.values())
        resumed = make()
        resumed.load_state_dict(state)
        assert head + drive(resumed, values[cut:], start_epoch=cut) == expected
    assert uninterrupted.state_dict() == resumed.state_dict()


def test_bad_controller_input():
    with pytest.raises(UnknownNameError, match="reduce_on_plateau"):
        schedules.build_controller("reduce_on_plato")
    with pytest.raises(UnknownNameError, match="patience"):
        schedules.build_controller("early_stopping", patients=3)
    with pytest.raises(UnknownNameError, match="max"):
        schedules.build_controller("early_stopping", mode="maximum")
    with pytest.raises(KeyError, match="valid/loss"):
        schedules.build_controller("early_stopping").observe(0, {"valid/accuracy": 0.5})


def test_controller_arguments_are_refused_when_built_not_at_the_first_evaluation():
    from optrepro.schedules import build_controller

    with pytest.raises(ValueError, match=r"monitor 'valid-loss'.*split one of train, valid, test"):
        build_controller("early_stopping", monitor="valid-loss")
    with pytest.raises(ValueError, match=r"monitor 'tset/loss'"):
        build_controller("reduce_on_plateau", monitor="tset/loss")
    with pytest.raises(ValueError, match=r"patience must be an integer >= 0, got 2.5"):
        build_controller("early_stopping", patience=2.5)  # was silently 2
    with pytest.raises(ValueError, match=r"start_from_epoch must be an integer >= 1, got 0"):
        build_controller("threshold_stop", start_from_epoch=0)
    assert build_controller("reduce_on_plateau", patience=2.0, cooldown=1).patience == 2


def test_a_monitored_metric_the_problem_does_not_log_is_refused_at_plan_time():
    # It used to pass the plan and fail at the run's first evaluation, after its data and model were built.
    from optrepro.plan import make_spec
    from optrepro.registry import UnknownNameError

    def spec(problem, monitor, controller="early_stopping"):
        return make_spec(paper="crowded_valley", problem=problem, scale="smoke", optimizer="sgd",
                         controllers=[{"name": controller, "monitor": monitor}])

    with pytest.raises(UnknownNameError, match=r"metric monitored by controller 'threshold_stop' on problem "
                                               r"'quadratic_deep': 'accuracy'.*Valid choices: loss$"):
        spec("quadratic_deep", "train/accuracy", "threshold_stop")
    with pytest.raises(UnknownNameError, match=r"'accuracy'.*Valid choices: loss$"):  # its default monitor
        make_spec(paper="crowded_valley", problem="quadratic_deep", scale="smoke", optimizer="sgd",
                  controllers=[{"name": "threshold_stop"}])
    with pytest.raises(UnknownNameError, match=r"'reg_los'.*Did you mean 'reg_loss'"):
        spec("cifar10_3c3d", "valid/reg_los")
    assert spec("cifar10_3c3d", "valid/reg_loss")["controllers"][0]["args"]["monitor"] == "valid/reg_loss"
