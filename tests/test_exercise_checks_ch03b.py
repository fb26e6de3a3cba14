"""The chapter 3b exercise checks: a correct solution passes, each typical mistake raises."""
import pytest
import torch

from oteseq import exercises
from oteseq.values import request_losses


def value_loss(target_logp, kl_logp, kl_ref, delta, z_init, kl_factor, weight_decay):
    nll = torch.stack([-row.mean() for row in target_logp]).mean()
    kl = (kl_logp.exp() * (kl_logp - kl_ref)).sum()
    return nll + kl_factor * kl + weight_decay * delta.norm() / z_init.norm() ** 2


def test_value_loss_formula_matches_the_package_on_a_hand_made_case():
    """The reference the check uses, against the formula written out on a tiny case."""
    rows = [torch.tensor([-1.0, -3.0], dtype=torch.float64),
            torch.tensor([-0.5], dtype=torch.float64)]
    kl_logp = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    kl_ref = torch.log(torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    delta = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    z_init = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    hp = type("H", (), {"kl_factor": 0.5, "v_weight_decay": 2.0})
    kl = 0.5 * torch.log(torch.tensor(2.0, dtype=torch.float64)) + 0.5 * torch.log(
        torch.tensor(2 / 3, dtype=torch.float64))
    want = (2.0 + 0.5) / 2 + 0.5 * kl + 2.0 * 5.0 / 4.0
    got = request_losses(rows, kl_logp, kl_ref, delta, z_init, hp, 3)[0]
    assert abs(float(got) - float(want)) < 1e-12
    assert abs(float(value_loss(rows, kl_logp[0], kl_ref[0], delta[0], z_init[0], 0.5, 2.0))
               - float(want)) < 1e-12


def test_value_loss_correct_passes():
    assert exercises.check_value_loss(value_loss) < 1e-12


@pytest.mark.parametrize("wrong, hint", [
    (lambda t, a, b, d, z, kf, wd: value_loss([r.sum()[None] for r in t], a, b, d, z, kf, wd),
     "average the NLL"),
    (lambda t, a, b, d, z, kf, wd: value_loss(t, b, a, d, z, kf, wd), "not the reverse"),
    (lambda t, a, b, d, z, kf, wd: value_loss(t, a, b, d, z, kf, 0.0)
     + wd * d.norm() / z.norm(), "not ‖z_init‖"),
    (lambda t, a, b, d, z, kf, wd: value_loss(t, a, b, d, z, kf, wd).reshape(1, 1, 2),
     None),
])
def test_value_loss_wrong_raises(wrong, hint):
    with pytest.raises(AssertionError) as raised:
        exercises.check_value_loss(wrong)
    if hint:
        assert hint in str(raised.value)


def clamp(delta, z_init, factor):
    limit = factor * z_init.norm(dim=1, keepdim=True)
    norm = delta.norm(dim=1, keepdim=True)
    return delta * torch.clamp(limit / norm.clamp(min=1e-30), max=1.0)


def test_clamp_correct_passes():
    assert exercises.check_clamp(clamp) < 1e-12


@pytest.mark.parametrize("wrong, hint", [
    (lambda d, z, f: d * (f * z.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True)),
     "zero row"),
    (lambda d, z, f: d * f * z.norm(dim=1, keepdim=True)
     / d.norm(dim=1, keepdim=True).clamp(min=1e-30), "inside the ball"),
    (lambda d, z, f: d.clamp(-f, f), "rescale a row"),
    (lambda d, z, f: d.mul_(0.5), "in place"),
])
def test_clamp_wrong_raises(wrong, hint):
    with pytest.raises(AssertionError) as raised:
        exercises.check_clamp(wrong)
    assert hint in str(raised.value)
