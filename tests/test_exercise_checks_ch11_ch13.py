"""The chapter 11 and 13 exercise checks: a correct solution passes, a wrong one raises."""
import pytest
import torch

from oteseq import exercises

# ------------------------------------------------------------------ chapter 11


def rewrite_metrics(nll_new, nll_true):
    return (float((nll_true > nll_new).double().mean()),
            float((torch.exp(-nll_new) - torch.exp(-nll_true)).mean()))


def batches(records, B):
    return [records[i:i + B] for i in range(0, len(records), B)]


def test_rewrite_metrics_correct_passes():
    assert exercises.check_rewrite_metrics(rewrite_metrics) == 0.0


@pytest.mark.parametrize("wrong", [
    lambda a, b: (float((b < a).double().mean()), rewrite_metrics(a, b)[1]),   # flipped
    lambda a, b: (float((b >= a).double().mean()), rewrite_metrics(a, b)[1]),  # ties count
    lambda a, b: (rewrite_metrics(a, b)[0], float((b - a).mean())),           # NLL not prob
    lambda a, b: rewrite_metrics(a, b)[0],                                    # not a pair
])
def test_rewrite_metrics_wrong_raises(wrong):
    with pytest.raises(AssertionError):
        exercises.check_rewrite_metrics(wrong)


def test_protocol_batches():
    assert exercises.check_protocol_batches(batches) == 0.0
    for wrong in (lambda r, B: [r[i:i + B] for i in range(0, len(r) - len(r) % B, B)],
                  lambda r, B: batches(list(reversed(r)), B),
                  lambda r, B: [r]):
        with pytest.raises(AssertionError):
            exercises.check_protocol_batches(wrong)

# ------------------------------------------------------------------ chapter 13


def woodbury(A_inv, U, S_inv):
    """(A + U S Uᵀ)⁻¹ from A⁻¹ (S given by its inverse)."""
    AU = A_inv @ U
    return A_inv - AU @ torch.linalg.solve(S_inv + U.T @ AU, AU.T)


def rls(W0, C0, lam, stream, *, misaligned=False):
    A0_inv = torch.linalg.inv(lam * C0)
    W, A_inv = W0.clone(), A0_inv
    for K, V in stream:
        A_inv = woodbury(A0_inv if misaligned else A_inv, K, torch.eye(K.shape[1], dtype=K.dtype))
        W = W + (V - W @ K) @ K.T @ A_inv
    return W


def rls_replace(W, A_inv, K_old, V_old, K_new, V_new):
    U = torch.cat([K_new, K_old], 1)
    m, q = K_new.shape[1], K_old.shape[1]
    S = torch.diag(torch.cat([torch.ones(m), -torch.ones(q)])).to(W.dtype)
    A_inv_new = woodbury(A_inv, U, S)
    rhs = (V_new - W @ K_new) @ K_new.T - (V_old - W @ K_old) @ K_old.T
    return W + rhs @ A_inv_new, A_inv_new


def forgetting(W0, C0, lam, stream, gamma):
    W, A = W0.clone(), lam * C0
    for K, V in stream:
        A = gamma * A + (1 - gamma) * lam * C0 + K @ K.T
        W = W + torch.linalg.solve(A, ((V - W @ K) @ K.T - (1 - gamma) * lam * (W - W0) @ C0).T).T
    return W


def hit_rate(W, W0, K, V):
    return float(((W @ K - V).norm(dim=0) < (W @ K - W0 @ K).norm(dim=0)).double().mean())


def test_rls():
    assert exercises.check_rls(rls) < 1e-8
    with pytest.raises(AssertionError, match="dropped the earlier keys"):
        exercises.check_rls(lambda *a: rls(*a, misaligned=True))


def test_rls_replace():
    assert exercises.check_rls_replace(rls_replace) < 1e-8
    with pytest.raises(AssertionError):  # only the new edit added, the old one kept
        exercises.check_rls_replace(lambda W, A_inv, Ko, Vo, Kn, Vn: rls_replace(
            W, A_inv, Ko[:, :0], Vo[:, :0], Kn, Vn))


def test_forgetting_rls():
    assert exercises.check_forgetting_rls(forgetting) < 1e-8
    def classic(W0, C0, lam, stream, gamma):  # the anchor decays too: A = γ A + K Kᵀ
        W, A = W0.clone(), lam * C0
        for K, V in stream:
            A = gamma * A + K @ K.T + 1e-9 * torch.eye(A.shape[0], dtype=A.dtype)
            W = W + torch.linalg.solve(A, ((V - W @ K) @ K.T).T).T
        return W
    with pytest.raises(AssertionError):
        exercises.check_forgetting_rls(classic)


def test_hit_rate():
    assert exercises.check_hit_rate(hit_rate) == 0.0
    with pytest.raises(AssertionError):
        exercises.check_hit_rate(lambda W, W0, K, V: float(
            ((W @ K - V).norm(dim=1) < (W @ K - W0 @ K).norm(dim=1)).double().mean()))


def test_in_place_modification_is_caught():
    def in_place(W0, C0, lam, stream):
        stream[0][0].mul_(2)
        return rls(W0, C0, lam, stream)
    with pytest.raises(AssertionError, match="in place"):
        exercises.check_rls(in_place)
