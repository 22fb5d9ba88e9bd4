"""Every registered problem at smoke scale: builds, trains a few steps, keeps fixed splits; TF-semantics helpers."""
import colorsys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optrepro import problems
from optrepro.problems import tf_compat
from optrepro.problems.deepobs import char_batches

NAMES = problems.available()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def first_batch(problem, name):
    bs = problems.info(name).defaults["smoke"]["batch_size"]
    train = problem.splits()["train"]
    return train.batch(train.order(torch.Generator().manual_seed(0))[:bs], torch.Generator().manual_seed(1)), bs


@pytest.mark.parametrize("name", NAMES)
def test_smoke_problem_trains_a_few_adam_steps(name):
    problem = problems.get(name, "smoke")
    torch.manual_seed(0)
    model = problem.build_model()
    model.train()
    batch, bs = first_batch(problem, name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if name == "quadratic_deep" else 1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(123)  # the same dropout masks / VAE noise every time, as the loop's closure does
        out = problem.forward(model, batch, problem.init_carry(bs, "cpu"))
        opt.zero_grad()
        out.loss.backward()
        losses.append(out.loss.item())
        if not losses[1:]:
            trainable = [p for p in model.parameters() if p.requires_grad]
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable), name
        opt.step()
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], (name, losses)
    # the declared metrics (what a controller may monitor, checked at plan time) are exactly what it logs
    assert out.count == bs and set(out.sums) == set(problems.info(name).metrics), (name, out.sums.keys())


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete_and_splits_are_fixed(name):
    info = problems.info(name)
    for scale in ("full", "smoke"):
        assert {"batch_size", "epochs", "eval_every"} <= set(info.defaults[scale]), (name, scale)
        assert info.cost_per_epoch_s[scale] > 0
    assert info.papers
    # two loads from scratch (splits() would return the process cache's one object twice) and the cached one:
    # the same tensors however often the data is built, so the validation split is fixed
    a = problems.get(name, "smoke").load_splits()
    b = problems.get(name, "smoke").load_splits()
    cached = problems.get(name, "smoke").splits()
    assert set(a) == {"train", "valid", "test"} and all(len(s) > 0 for s in a.values())
    for key in a:
        assert a[key] is not b[key] and len(a[key]) == len(b[key]) == len(cached[key])
        assert all(torch.equal(x, y) for x, y in zip(a[key].tensors, b[key].tensors))
        assert all(torch.equal(x, y) for x, y in zip(a[key].tensors, cached[key].tensors))


def test_a_problem_without_a_scale_block_is_refused_at_registration():
    # It used to register and fail later in make_spec with a bare KeyError 'smoke'
    from optrepro.problems.registry import ProblemInfo

    full = {"batch_size": 32, "epochs": 1, "eval_every": 1}
    with pytest.raises(ValueError, match=r"problem 'mine': defaults\['smoke'\] lacks batch_size, epochs, eval_every"):
        ProblemInfo(name="mine", target="m:M", defaults={"full": full})
    with pytest.raises(ValueError, match=r"defaults\['full'\] lacks eval_every"):
        ProblemInfo(name="mine", target="m:M", defaults={"full": {"batch_size": 32, "epochs": 1}, "smoke": full})


def test_digits_are_read_as_scikit_learn_loads_them():
    from sklearn.datasets import load_digits

    from optrepro.problems.sources import sklearn_digits

    (x, y), (x_ref, y_ref) = sklearn_digits(), load_digits(return_X_y=True)
    assert x.dtype == x_ref.dtype and np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


def test_unknown_problem_argument_lists_the_valid_ones():
    with pytest.raises(ValueError, match="weight_decay"):
        problems.get("cifar10_3c3d", "smoke", weight_dekay=0.1)
    with pytest.raises(ValueError, match="64,32"):
        problems.get("caadam_california_mlp", "smoke", hidden="a,b")


def test_every_smoke_problem_runs_through_the_training_loop(tmp_path):
    from optrepro.plan import make_spec
    from optrepro.runner import run_one
    from optrepro.train import load_result

    for name in NAMES:
        spec = make_spec(paper=problems.info(name).papers[0], problem=name, scale="smoke", optimizer="adam",
                         epochs=1, seed=0)
        # The loop evaluates in whole multiples of the training batch, so carried state (char-RNN) works too.
        entry = run_one(spec, tmp_path)
        det = load_result(entry["dir"])["deterministic"]
        assert det["status"] == "ok", (name, det.get("error"))
        assert det["steps"] > 0 and np.isfinite(det["final"]["test"].get("loss", np.nan)), (name, det)


# --- TF semantics -----------------------------------------------------------------------------------
def test_same_padding_is_asymmetric_like_tf():
    assert tf_compat.same_padding(32, 3, 2) == (0, 1)
    assert tf_compat.same_padding(7, 4, 1) == (1, 2)
    assert tf_compat.same_padding(28, 4, 2) == (1, 1)
    conv = tf_compat.TFConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 32, 32)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    assert torch.allclose(conv(x), expected, atol=1e-6) and expected.shape[-1] == 16


@pytest.mark.parametrize("size,stride", [(7, 2), (14, 1)])
def test_tf_conv_transpose_is_the_adjoint_of_tf_same_conv(size, stride):
    deconv = tf_compat.TFConvTranspose2d(2, 3, 4, stride, bias=False)
    out_size = size * stride
    x = torch.randn(1, 3, out_size, out_size)
    y = torch.randn(1, 2, size, size)
    conv_x = F.conv2d(tf_compat.pad_same(x, 4, stride), deconv.weight, stride=stride)  # TF SAME conv, same kernel
    assert conv_x.shape == y.shape and deconv(y).shape == x.shape
    assert torch.allclose((conv_x * y).sum(), (x * deconv(y)).sum(), rtol=1e-4, atol=1e-4)


def test_max_pool_same_pads_with_minus_infinity():
    x = -torch.ones(1, 1, 4, 4)
    assert tf_compat.TFMaxPool2d(3, 2)(x).eq(-1).all()


def test_saturation_matches_hsv_and_contrast_keeps_channel_means():
    x = torch.rand(4, 3, 5, 5) * 255
    factor = torch.tensor([0.5, 1.0, 1.5, 0.0])
    out = tf_compat.adjust_saturation(x, factor)
    for b in range(4):
        r, g, bl = (float(v) for v in x[b, :, 2, 3])
        h, s, v = colorsys.rgb_to_hsv(r, g, bl)
        expected = colorsys.hsv_to_rgb(h, min(max(s * float(factor[b]), 0.0), 1.0), v)
        assert np.allclose(out[b, :, 2, 3].numpy(), expected, rtol=1e-4, atol=1e-3)
    contrast = tf_compat.adjust_contrast(x, torch.tensor([0.2, 1.0, 1.8, 0.5]))
    assert torch.allclose(contrast.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-3)
    assert torch.allclose(contrast[1], x[1])


def test_per_image_standardization_and_augmentation_are_reproducible():
    x = (torch.rand(6, 3, 32, 32) * 255).to(torch.uint8)
    a = tf_compat.deepobs_augment(x, torch.Generator().manual_seed(5))
    b = tf_compat.deepobs_augment(x, torch.Generator().manual_seed(5))
    c = tf_compat.deepobs_augment(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float32
    z = tf_compat.per_image_standardization(a)
    assert torch.allclose(z.flatten(1).mean(1), torch.zeros(6), atol=1e-4)
    assert torch.allclose(z.flatten(1).std(1, unbiased=False), torch.ones(6), atol=1e-3)
    flat = tf_compat.per_image_standardization(torch.full((1, 3, 4, 4), 7.0))  # std 0: divide by 1/sqrt(N)
    assert torch.equal(flat, torch.zeros_like(flat))


def test_random_crop_shifts_within_the_zero_padding():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(50, 1, 1, 1)
    out = tf_compat.random_crop(x, 2, torch.Generator().manual_seed(0))
    # every crop is a shifted window of the padded image: its non-zero pixels keep their order
    assert out.shape == x.shape and (out.sum(dim=(1, 2, 3)) <= x[0].sum()).all()
    assert len({tuple(o.flatten().tolist()) for o in out}) > 5


def test_char_batches_continue_each_row_across_batches():
    tokens = np.arange(1001)
    x, y = char_batches(tokens, batch_size=4, seq_length=5)
    num_batches = 1000 // 20
    assert x.shape == (num_batches * 4, 5) and torch.equal(y, x + 1)
    batch0, batch1 = x[0:4], x[4:8]
    assert torch.equal(batch1[:, 0], batch0[:, -1] + 1)  # row r of batch i+1 continues row r of batch i


def test_keras_validation_split_takes_the_last_fraction():
    problem = problems.get("caadam_california_mlp", "smoke")
    s = problem.splits()
    assert len(s["valid"]) == len(s["train"]) + len(s["valid"]) - int((len(s["train"]) + len(s["valid"])) * 0.8)


@pytest.mark.parametrize("name,coefficient,expected_tensors", [
    ("cifar10_3c3d", 0.5 * 0.002, 6),  # DeepOBS: 0.5*wd*sum(w^2) on every kernel, no bias
    ("svhn_wrn164", 0.5 * 5e-4, 1 + 3 * 2 + 2 + 1),  # WRN-10-1: stem, 2 convs per stage, 2 shortcuts, dense
    ("caadam_cifar10_resnet20", 1e-4, 1 + 2 * 3),  # Keras l2(1e-4) on the 3x3 kernels only (ResNet-8 at smoke)
])
def test_l2_penalty_is_in_the_loss_on_weights_only(name, coefficient, expected_tensors):
    problem = problems.get(name, "smoke")
    model = problem.build_model().eval()
    batch, _ = first_batch(problem, name)
    out = problem.forward(model, batch)
    weights = model.l2_weights()
    assert len(weights) == expected_tensors and all(w.ndim > 1 for w in weights)
    penalty = coefficient * sum(float(w.detach().square().sum()) for w in weights)
    data_loss = float(out.sums["loss"]) / out.count
    assert out.loss.item() == pytest.approx(data_loss + penalty, rel=1e-5)
    assert float(out.sums["reg_loss"]) / out.count == pytest.approx(data_loss + penalty, rel=1e-5)


def test_char_rnn_evaluates_consecutive_batches_with_the_carried_state():
    problem = problems.get("tolstoi_char_rnn", "smoke")
    model = problem.build_model().eval()
    valid = problem.splits()["valid"]
    rows = problem.batch_size
    with torch.no_grad():
        joint = problem.forward(model, valid.batch(torch.arange(2 * rows)), problem.init_carry(2 * rows, "cpu"))
        first = problem.forward(model, valid.batch(torch.arange(rows)), problem.init_carry(rows, "cpu"))
        second = problem.forward(model, valid.batch(torch.arange(rows, 2 * rows)), first.carry)
        fresh = problem.forward(model, valid.batch(torch.arange(rows, 2 * rows)), problem.init_carry(rows, "cpu"))
    assert float(joint.sums["loss"]) == pytest.approx(float(first.sums["loss"] + second.sums["loss"]), rel=1e-5)
    assert float(second.sums["loss"]) != pytest.approx(float(fresh.sums["loss"]), rel=1e-6)  # the state matters
    with pytest.raises(ValueError, match="multiple"):
        problem.forward(model, valid.batch(torch.arange(rows + 1)))
