"""Full-scale model definitions checked at full size without data: parameter counts derived by arithmetic
from the published architectures, initial-weight statistics of the TF/Keras initializers, and quadratic_deep's
epoch-0 test loss from the Crowded Valley logs (347.36)."""
import math

import numpy as np
import pytest
import torch

from optrepro import problems
from optrepro.problems.models import deepobs_nets as nets
from optrepro.problems.models.keras_nets import KerasResNet, NOSConvNet

TRUNC = 0.87962566103423978  # std of a standard normal truncated at +-2


def count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def dense(fin, fout, bias=True):
    return fin * fout + (fout if bias else 0)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)
    with torch.no_grad():  # statistics of initial weights only
        yield


def test_quadratic_deep_epoch0_test_loss_matches_the_crowded_valley_logs():
    problem = problems.get("quadratic_deep", "full", hessian_instance=1)
    model = problem.build_model()
    test = problem.splits()["test"]
    # DeepOBS evaluates full batches only (drop_remainder): 7 batches of 128 = 896 of the 1000 test points.
    losses = [problem.forward(model, test.batch(torch.arange(i, i + 128))).sums["loss"] for i in range(0, 896, 128)]
    assert float(sum(losses)) / 896 == pytest.approx(347.36, abs=0.005)  # e.g. one-shot Adam, seed 44
    # The first draw of the module-level RNG (the default; DeepOBS after PR #44) is another problem: 353.45,
    # the epoch-0 loss of e.g. one-shot Adam seed 42 (every instance: tests/test_fidelity.py).
    first = problems.get("quadratic_deep", "full").build_model().requires_grad_(False)
    assert first(test.tensors[0][:896]).mean().item() == pytest.approx(353.45, abs=0.005)
    eigenvalues = np.linalg.eigvalsh(model.hessian.double().numpy())
    assert (eigenvalues[:90] > 0).all() and (eigenvalues[:90] < 1).all()
    assert (eigenvalues[90:] > 30).all() and (eigenvalues[90:] < 60).all()
    assert torch.equal(model.theta.detach(), torch.ones(1, 100))


def test_fmnist_2c2d_parameters_and_truncated_normal_init():
    model = nets.Net2c2d(10)
    # conv 5x5x1x32, conv 5x5x32x64, dense (7*7*64)x1024, dense 1024x10, all with biases
    assert count(model) == conv(5, 1, 32) + conv(5, 32, 64) + dense(7 * 7 * 64, 1024) + dense(1024, 10) == 3_274_634
    w = model.fc1.weight
    # tf.truncated_normal_initializer(0.05): cut at 2 std, std of the result 0.05 * 0.8796 (no rescaling)
    assert w.abs().max() <= 0.1 and float(w.std()) == pytest.approx(0.05 * TRUNC, rel=0.01)
    assert torch.all(model.conv1.bias == 0.05) and torch.all(model.fc2.bias == 0.05)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_cifar10_3c3d_parameters_and_glorot_init():
    model = nets.Net3c3d(10)
    # 32 -valid5-> 28 -pool-> 14 -valid3-> 12 -pool-> 6 -same3-> 6 -pool-> 3: flatten 3*3*128
    expected = (conv(5, 3, 64) + conv(3, 64, 96) + conv(3, 96, 128)
                + dense(3 * 3 * 128, 512) + dense(512, 256) + dense(256, 10))
    assert count(model) == expected == 895_210
    w = model.fcs[0].weight  # glorot_uniform: U(-l, l), l = sqrt(6/(fan_in+fan_out))
    limit = math.sqrt(6 / (1152 + 512))
    assert w.abs().max() <= limit and float(w.std()) == pytest.approx(limit / math.sqrt(3), rel=0.01)
    c = model.convs[1].weight  # TF1 glorot_normal: truncated, std sqrt(2/(fan_in+fan_out)) after rescaling
    std = math.sqrt(2 / (9 * 64 + 9 * 96))
    assert float(c.std()) == pytest.approx(std, rel=0.02) and c.abs().max() <= 2 * std / TRUNC
    assert all(float(b.abs().sum()) == 0 for b in (model.convs[0].bias, model.fcs[2].bias))
    assert len(model.l2_weights()) == 6  # kernels only, never biases
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_allcnnc_parameters_and_init():
    model = nets.AllCNNC(100)
    expected = (conv(3, 3, 96) + 2 * conv(3, 96, 96) + conv(3, 96, 192) + 2 * conv(3, 192, 192)
                + conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 100))
    assert count(model) == expected == 1_387_108
    assert all(torch.all(c.bias == 0.1) for c in model.convs)
    std = math.sqrt(2 / (9 * 96 + 9 * 192))
    assert float(model.convs[3].weight.std()) == pytest.approx(std, rel=0.02)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_wrn_16_4_parameters_and_batchnorm():
    model = nets.WideResNet(10, num_residual_units=2, widening_factor=4)

    def bn(c):
        return 2 * c

    def stage(cin, cout):  # first unit: BN(cin), 1x1 shortcut, conv, BN, conv; second unit: BN, conv, BN, conv
        first = bn(cin) + conv(1, cin, cout, False) + conv(3, cin, cout, False) + bn(cout) + conv(3, cout, cout, False)
        return first + 2 * (bn(cout) + conv(3, cout, cout, False))

    expected = conv(3, 3, 16, False) + stage(16, 64) + stage(64, 128) + stage(128, 256) + bn(256) + dense(256, 10)
    assert count(model) == expected == 2_748_890
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == pytest.approx(0.1) and m.eps == 1e-5 for m in norms)  # TF momentum 0.9
    assert len(model.l2_weights()) == 1 + 3 * 5 + 1  # stem, 5 convs per stage, dense
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_char_rnn_parameters_and_tf_lstm_init():
    model = nets.CharRNN(83, 128, 2)
    lstm = dense(128 + 128, 4 * 128)  # TF LSTMCell: one kernel [in+hidden, 4h] and one bias [4h]
    assert count(model) == 83 * 128 + 2 * lstm + dense(128, 83) == 284_499
    layer = model.layers[0]
    limit = math.sqrt(6 / (256 + 512))
    assert layer.weight_ih.abs().max() <= limit and layer.weight_hh.abs().max() <= limit
    assert float(layer.bias.abs().sum()) == 0 and float(layer.forget_bias.sum()) == 128  # forget_bias 1.0
    assert model.softmax_b.abs().max() <= math.sqrt(6 / 166)  # get_variable default: glorot_uniform on 1-D
    logits, state = model(torch.zeros(3, 50, dtype=torch.long), model.zero_state(3, "cpu"))
    assert logits.shape == (3, 50, 83) and state[1][0].shape == (3, 128)


def test_vae_parameters_and_shapes():
    model = nets.VAE(8, 64)
    encoder = conv(4, 1, 64) + 2 * conv(4, 64, 64) + 2 * dense(7 * 7 * 64, 8)
    decoder = dense(8, 24) + dense(24, 49) + conv(4, 1, 64) + 2 * conv(4, 64, 64) + dense(14 * 14 * 64, 784)
    assert count(model) == encoder + decoder == 10_151_489
    img, mean, log_std = model(torch.zeros(2, 1, 28, 28))
    assert img.shape == (2, 28, 28) and mean.shape == (2, 8) and 0 <= float(img.min()) <= float(img.max()) <= 1
    torch.manual_seed(1)
    a = model.eval()(torch.ones(2, 1, 28, 28))[0]
    torch.manual_seed(1)
    b = model(torch.ones(2, 1, 28, 28))[0]
    assert torch.equal(a, b)  # noise comes from torch's global RNG: a re-seeded closure replays it


def test_keras_resnet20_parameters_order_and_init():
    model = KerasResNet(10)
    stem = conv(3, 3, 16) + 2 * 16
    stage1 = 3 * 2 * (conv(3, 16, 16) + 2 * 16)

    def stage(cin, cout):
        first = conv(3, cin, cout) + conv(3, cout, cout) + conv(1, cin, cout) + 3 * 2 * cout
        return first + 2 * 2 * (conv(3, cout, cout) + 2 * cout)

    assert count(model) == stem + stage1 + stage(16, 32) + stage(32, 64) + dense(64, 10) == 273_258
    params = list(model.parameters())
    assert len(params) == 86  # d_m of CaAdam's depth scaling in Keras (every conv has a bias)
    assert params[0].shape == (16, 3, 3, 3) and params[2].shape == (16,)  # conv kernel, bias, then BN gamma
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == pytest.approx(0.01) and m.eps == 1e-3 for m in norms)  # Keras 0.99 / 1e-3
    w = model.blocks[8].conv_b.weight  # he_normal: truncated, std sqrt(2/fan_in)
    assert float(w.std()) == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.02)
    assert len(model.l2_weights()) == 19  # stem + 18 block 3x3 convs; not the 2 shortcuts nor the Dense
    assert model(torch.zeros(2, 3, 56, 56)).shape == (2, 10)


def test_nos_convnet_parameters():
    model = NOSConvNet(32)
    expected = conv(3, 3, 32) + conv(3, 32, 64) + conv(3, 64, 128) + 2 * (32 + 64 + 128) + dense(128, 10)
    assert count(model) == expected == 94_986  # the authors' ConvNet at base 32 (NeuralOptimizerSearch.py)


@pytest.mark.parametrize("num_classes,strategy,expected", [
    (10, "additive", {1.9195, 2.0133}), (10, "multiplicative", {4.7483, 5.5663}),
    (100, "additive", {1.1813, 2.0056}), (100, "multiplicative", {1.3596, 5.4942}),
])
def test_resnet20_gives_caadam_the_published_as_run_multipliers(num_classes, strategy, expected):
    """The as-run kernel / 1-D multipliers of the authors' code on the notebooks' Keras ResNet-20: they
    need the same kernel shapes (min 432, median 6912 or 7808, max 36864) and the Dense head as last kernel."""
    from optrepro.optim.caadam import caadam_factors

    factors = caadam_factors(KerasResNet(num_classes), strategy, "reference")
    assert {round(float(v), 4) for v in factors.values()} == expected


def test_mlp_depth_factors_follow_keras_variable_order():
    from optrepro.optim.caadam import caadam_factors
    from optrepro.problems.models.keras_nets import KerasMLP

    factors = caadam_factors(KerasMLP(8, (64, 32)), "depth", "reference")
    assert [round(float(v), 4) for v in factors.values()] == [1.7818, 1.5874, 1.4142, 1.2599, 1.1225, 1.0]
