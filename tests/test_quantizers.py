import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vqbench.quantizers import (
    FSQ,
    BinarySphericalQuantizer,
    DenseLatticeQuantizer,
    EMAVectorQuantizer,
    GumbelQuantizer,
    IndexBackpropagationQuantizer,
    LatticeQuantizer,
    LookupFreeQuantizer,
    ResidualVectorQuantizer,
    SimpleFSQ,
    SimVQ,
    VectorQuantizer,
)
from vqbench.quantizers.distances import DEFAULT_MAX_ELEMENTS, entropy_loss, entropy_terms, nearest_code
from vqbench.quantizers.fsq import LEVELS_FOR_SIZE
from vqbench.quantizers.lfq_entropy import code_distribution, lfq_entropy_terms, logit_scale_for_temperature, sign_codes


def make(name: str, dim: int = 8, size: int = 64):
    if name == "vq":
        return VectorQuantizer(size, dim)
    if name == "vq_l2":
        return VectorQuantizer(size, dim, l2_norm=True)
    if name == "vq_l2_seed":
        return VectorQuantizer(size, dim, l2_norm=True, l2_norm_mode="seed")
    if name == "ema":
        return EMAVectorQuantizer(size, dim)
    if name == "fsq":
        return FSQ(dim, levels=[4, 4, 4])
    if name == "sfsq":
        return SimpleFSQ(dim, levels=[4, 4, 4])
    if name == "lfq":
        return LookupFreeQuantizer(dim, bits=6)
    if name == "simvq":
        return SimVQ(size, dim)
    if name == "lattice":
        return LatticeQuantizer(dim, codebook_size=size)
    if name == "dense_lattice":
        return DenseLatticeQuantizer(dim)
    if name == "gumbel":
        return GumbelQuantizer(size, dim)
    if name == "rvq":
        return ResidualVectorQuantizer(size, dim, num_stages=3)
    if name == "ibq":
        return IndexBackpropagationQuantizer(size, dim)
    if name == "bsq":
        return BinarySphericalQuantizer(dim, bits=6, group_size=3)
    if name == "vq_options":  # rotation trick, k-means init, dead-code restart
        return VectorQuantizer(size, dim, rotation_trick=True, init="kmeans", dead_code_threshold=0.9)
    if name == "ema_options":
        return EMAVectorQuantizer(size, dim, rotation_trick=True, init="kmeans")
    raise ValueError(name)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ["vq", "vq_l2_seed", "ema", "simvq", "lattice", "rvq", "lfq_square"])
def test_straight_through_gradient_is_identity(name):
    q = LookupFreeQuantizer(8, bits=8) if name == "lfq_square" else make(name)
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = q(z)
    grad = torch.randn_like(z)
    (out.codes * grad).sum().backward()
    torch.testing.assert_close(z.grad, grad)


def test_l2_llamagen_gradient_goes_through_normalisation():
    q = make("vq_l2")
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    grad = torch.randn_like(z)
    (q(z).codes * grad).sum().backward()
    expected = torch.autograd.grad((F.normalize(z, dim=1) * grad).sum(), z)[0]
    torch.testing.assert_close(z.grad, expected)


def test_vq_picks_the_nearest_code_and_losses_follow_the_formula():
    q = make("vq")
    z = torch.randn(2, 8, 3, 3)
    out = q(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 8)
    expected = torch.cdist(rows, q.codebook.detach()).argmin(1)
    assert torch.equal(out.indices.flatten(), expected)
    quantized = q.codebook.detach()[expected]
    torch.testing.assert_close(out.losses["commitment"], F.mse_loss(rows, quantized))
    torch.testing.assert_close(out.losses["codebook"], F.mse_loss(quantized, rows))


def test_vq_codebook_gradient_comes_only_from_the_codebook_term():
    q = make("vq")
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = q(z)
    out.losses["commitment"].backward(retain_graph=True)
    assert q.codebook.grad is None or torch.count_nonzero(q.codebook.grad) == 0
    q.codebook.grad = None
    out.losses["codebook"].backward()
    rows = z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    expected = torch.zeros_like(q.codebook)
    # d/de_k mean((e_k - z_i)^2) summed over the rows assigned to k
    idx = out.indices.flatten()
    expected.index_add_(0, idx, 2 * (q.codebook.detach()[idx] - rows) / rows.numel())
    torch.testing.assert_close(q.codebook.grad, expected)


def test_ema_statistics_are_buffers_and_codebook_gets_no_gradient():
    q = make("ema")
    names = {n for n, _ in q.named_parameters()}
    assert not any("codebook" in n or "ema" in n for n in names)
    buffers = {n for n, _ in q.named_buffers()}
    assert {"codebook", "ema_counts", "ema_sums"} <= buffers
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = q(z)
    assert set(out.losses) == {"commitment"}


def test_ema_default_update_is_the_visual_tokenizer_rule():
    """Counts from 0, sums from the initial codes, no smoothing, codes without a vector in the batch keep their value,
    and the batch is quantized with the codebook before its update (visual-tokenizer-pytorch,
    models/quantizer/quantizer.py update_codebook, called after the step in train_vqvae.py)."""
    q = EMAVectorQuantizer(4, 2, decay=0.9)
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0], [5.0, 5.0]])
    q.codebook.copy_(codebook)
    q.ema_sums.copy_(codebook)
    rows = torch.tensor([[0.1, 0.0], [0.9, 1.2], [1.1, 0.8], [-0.9, 2.1], [0.0, -0.2]])
    out = q.train()(rows.t().reshape(1, 2, 5, 1))
    torch.testing.assert_close(out.codes.reshape(2, 5).t(), codebook[[0, 1, 1, 2, 0]])  # the codes before the update
    counts = torch.tensor([2.0, 2.0, 1.0, 0.0])
    sums = torch.stack([rows[[0, 4]].sum(0), rows[[1, 2]].sum(0), rows[3], torch.zeros(2)])
    n = 0.1 * counts
    s = 0.9 * codebook + 0.1 * sums
    torch.testing.assert_close(q.ema_counts, n)
    torch.testing.assert_close(q.ema_sums, s)
    torch.testing.assert_close(q.codebook[:3], s[:3] / n[:3, None])
    assert torch.equal(q.codebook[3], codebook[3])  # no vector, no update (its S / N would be 0 / 0)
    # a second batch with one vector, for code 3: the other codes keep the vectors of the first update
    first = q.codebook.clone()
    q(torch.tensor([[4.9, 5.0]]).t().reshape(1, 2, 1, 1))
    assert torch.equal(q.codebook[:3], first[:3])
    torch.testing.assert_close(q.codebook[3], (0.81 * codebook[3] + 0.1 * torch.tensor([4.9, 5.0])) / 0.1)


def test_ema_laplace_smoothing_variant_matches_hand_computation():
    """quantizer.epsilon=1e-5 quantizer.initial_count=1: Sonnet / VQ-VAE-2 smoothing, counts from one."""
    q = EMAVectorQuantizer(4, 2, decay=0.9, epsilon=1e-5, initial_count=1.0)
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0], [5.0, 5.0]])
    q.codebook.copy_(codebook)
    q.ema_sums.copy_(codebook)
    rows = torch.tensor([[0.1, 0.0], [0.9, 1.2], [1.1, 0.8], [-0.9, 2.1], [0.0, -0.2]])
    out = q.train()(rows.t().reshape(1, 2, 5, 1))
    torch.testing.assert_close(out.codes.reshape(2, 5).t(), codebook[[0, 1, 1, 2, 0]])
    counts = torch.tensor([2.0, 2.0, 1.0, 0.0])
    sums = torch.stack([rows[[0, 4]].sum(0), rows[[1, 2]].sum(0), rows[3], torch.zeros(2)])
    n = 0.9 * torch.ones(4) + 0.1 * counts
    s = 0.9 * codebook + 0.1 * sums
    smoothed = (n + 1e-5) / (n.sum() + 4e-5) * n.sum()
    torch.testing.assert_close(q.ema_counts, n)
    torch.testing.assert_close(q.codebook, s / smoothed[:, None])


def test_ema_pytorch_vq_vae_rule_matches_hand_computation():
    """zalandoresearch/pytorch-vq-vae's rule (AGKhalil/ll-vq-vae): counts start at 0, the smoothed counts are kept,
    and z is quantized with the codes from before the update."""
    torch.manual_seed(0)
    q = EMAVectorQuantizer(4, 2, decay=0.9, update_rule="pytorch_vq_vae")  # its own eps, 1e-5
    assert torch.equal(q.ema_counts, torch.zeros(4)) and not torch.equal(q.ema_sums, q.codebook)
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0], [5.0, 5.0]])
    stats = torch.tensor([[0.5, 0.5], [0.2, -0.1], [1.0, 1.0], [3.0, -2.0]])
    q.codebook.copy_(codebook)
    q.ema_sums.copy_(stats)
    rows = torch.tensor([[0.1, 0.0], [0.9, 1.2], [1.1, 0.8], [-0.9, 2.1], [0.0, -0.2]])
    out = q.train()(rows.t().reshape(1, 2, 5, 1))
    counts = torch.tensor([2.0, 2.0, 1.0, 0.0])
    sums = torch.stack([rows[[0, 4]].sum(0), rows[[1, 2]].sum(0), rows[3], torch.zeros(2)])
    n = 0.1 * counts
    smoothed = (n + 1e-5) / (n.sum() + 4e-5) * n.sum()
    torch.testing.assert_close(q.ema_counts, smoothed)
    torch.testing.assert_close(q.codebook, (0.9 * stats + 0.1 * sums) / smoothed[:, None])
    assert q.codebook[3].abs().max() > 1e4  # unused in the first batch: pushed far from every z
    before = codebook[torch.tensor([0, 1, 1, 2, 0])]
    torch.testing.assert_close(out.codes.reshape(2, 5).t(), before)  # the codes before this batch's update


def test_ema_rejects_an_unknown_update_rule():
    with pytest.raises(ValueError, match="quantizer.update_rule must be one of"):
        EMAVectorQuantizer(4, 2, update_rule="sonnet")
    with pytest.raises(ValueError, match="pytorch_vq_vae fixes its own smoothing"):
        EMAVectorQuantizer(4, 2, epsilon=1e-5, update_rule="pytorch_vq_vae")


def test_ema_does_not_update_in_eval_mode():
    q = make("ema").eval()
    before = q.codebook.clone()
    q(torch.randn(2, 8, 3, 3))
    assert torch.equal(q.codebook, before)


@pytest.mark.parametrize("levels", [[2], [3], [2, 2], [8, 6, 5], [8, 5, 5, 5], [7, 5, 5, 5, 5]])
def test_fsq_reaches_every_level_and_enumerates_exactly_codebook_size_codes(levels):
    q = FSQ(len(levels), levels=levels).eval()
    per_channel = []
    for level in levels:
        # invert bound(z) = tanh(z + shift) * half - offset at each integer the channel may round to
        half = (level - 1) * (1 + 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        targets = torch.arange(level, dtype=torch.float64) - level // 2
        z = torch.atanh((targets + offset) / half) - torch.atanh(torch.tensor(offset / half, dtype=torch.float64))
        per_channel.append(z.float())
    grid = torch.cartesian_prod(*per_channel).reshape(-1, len(levels))
    out = q(grid.t().reshape(1, len(levels), -1, 1))
    assert q.codebook_size == grid.shape[0]
    assert out.indices.unique().numel() == q.codebook_size
    all_codes = q.indices_to_codes(torch.arange(q.codebook_size).reshape(1, -1, 1))
    assert all_codes.flatten(2).unique(dim=2).shape[2] == q.codebook_size
    # far outside the range, the outermost levels are still the ones reached
    extremes = q(torch.tensor([[-50.0] * len(levels), [50.0] * len(levels)]).t().reshape(1, len(levels), 2, 1))
    assert extremes.indices.flatten().tolist() == [0, q.codebook_size - 1]


def test_fsq_levels_follow_the_paper_table_and_reject_unknown_sizes():
    for size, levels in LEVELS_FOR_SIZE.items():
        assert FSQ(8, codebook_size=size).levels == levels
    with pytest.raises(ValueError, match="quantizer.levels"):
        FSQ(8, codebook_size=500)


def test_fsq_codes_are_scaled_integers():
    q = FSQ(3, levels=[8, 5, 5]).eval()
    codes = q(torch.randn(2, 3, 4, 4) * 3).codes
    scaled = codes * torch.tensor([4.0, 2.0, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(scaled, scaled.round())
    assert scaled[:, 0].min() >= -4 and scaled[:, 0].max() <= 3
    assert scaled[:, 1:].abs().max() <= 2


def _fsq_bound_terms(levels: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """half, shift and L // 2 per channel, from the formula of Mentzer et al. 2023, appendix A.1."""
    level = torch.tensor(levels, dtype=torch.float64)
    half = (level - 1) * (1 + 1e-3) / 2
    offset = (level % 2 == 0).double() * 0.5
    return half, torch.atanh(offset / half), torch.div(level, 2, rounding_mode="floor")


def test_fsq_codes_and_straight_through_gradient_follow_the_formula():
    levels = [8, 5, 3]
    q = FSQ(3, levels=levels)  # codebook.dim = len(levels): no projection
    z = (torch.randn(2, 3, 4, 4) * 2).requires_grad_(True)
    out = q(z)
    half, shift, half_width = (t.view(1, 3, 1, 1) for t in _fsq_bound_terms(levels))
    bounded = torch.tanh(z.detach().double() + shift) * half - (half * torch.tanh(shift))
    torch.testing.assert_close(out.codes.double(), torch.round(bounded) / half_width)
    upstream = torch.randn_like(z)
    (out.codes * upstream).sum().backward()
    # d/dz round_ste(bound(z)) / (L // 2) = half (1 - tanh^2(z + shift)) / (L // 2): rounding passes the gradient
    expected = upstream.double() * half * (1 - torch.tanh(z.detach().double() + shift) ** 2) / half_width
    torch.testing.assert_close(z.grad.double(), expected, rtol=1e-5, atol=1e-7)


def test_simple_fsq_values_indices_and_straight_through_gradient_follow_the_formula():
    levels = [8, 5, 3]
    q = SimpleFSQ(3, levels=levels)
    z = (torch.randn(2, 3, 4, 4) * 3).requires_grad_(True)
    out = q(z)
    steps = torch.tensor(levels, dtype=torch.float64).view(1, 3, 1, 1) - 1
    s = torch.sigmoid(z.detach().double())
    n = torch.round(steps * s)  # n = round((L - 1) sigmoid(z)) in 0..L-1, code = n / (L - 1)
    torch.testing.assert_close(out.codes.double(), n / steps)
    expected_index = n[:, 0] + 8 * n[:, 1] + 8 * 5 * n[:, 2]  # mixed radix, first channel least significant
    assert torch.equal(out.indices, expected_index.long())
    upstream = torch.randn_like(z)
    (out.codes * upstream).sum().backward()
    torch.testing.assert_close(z.grad.double(), upstream.double() * s * (1 - s), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["seed", "llamagen"])
def test_l2_normalised_vq_losses_follow_their_convention(mode):
    """Both conventions pick the code of highest cosine similarity and return it normalised; ``seed`` takes the
    losses between that code and the raw z, ``llamagen`` between it and the normalised z."""
    q = VectorQuantizer(16, 4, l2_norm=True, l2_norm_mode=mode)
    with torch.no_grad():
        q.codebook.copy_(torch.randn(16, 4))
    z = torch.randn(2, 4, 3, 3) * 3
    out = q(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 4)
    codebook = q.codebook.detach()
    cosine = (rows @ codebook.t()) / rows.norm(dim=1, keepdim=True) / codebook.norm(dim=1)
    indices = cosine.argmax(1)
    assert torch.equal(out.indices.flatten(), indices)
    code = codebook[indices] / codebook[indices].norm(dim=1, keepdim=True)
    torch.testing.assert_close(out.codes.permute(0, 2, 3, 1).reshape(-1, 4), code)
    against = rows if mode == "seed" else rows / rows.norm(dim=1, keepdim=True)
    expected = ((code - against) ** 2).mean()
    torch.testing.assert_close(out.losses["codebook"], expected)
    torch.testing.assert_close(out.losses["commitment"], expected)


def test_ema_dead_codes_are_restarted_onto_the_data():
    """All vectors lie in [4, 6]^2, far from the initial codes (U(-1/K, 1/K)): without restarts the one or two codes
    nearest to the data take every vector and the rest never move. Restarted codes are placed on batch vectors."""
    torch.manual_seed(0)
    data = (4 + 2 * torch.rand(1, 2, 8, 8)).repeat(2, 1, 1, 1)
    plain = EMAVectorQuantizer(16, 2, decay=0.5).train()
    restarting = EMAVectorQuantizer(16, 2, decay=0.5, dead_code_threshold=0.5).train()
    restarting.load_state_dict(plain.state_dict())
    for _ in range(5):
        plain(data)
        restarting(data)
    inside = ((restarting.codebook > 3.5) & (restarting.codebook < 6.5)).all(1)
    assert int(inside.sum()) == 16  # every code was moved onto the data
    assert int(((plain.codebook > 3.5) & (plain.codebook < 6.5)).all(1).sum()) <= 2
    used = restarting.eval()(data).indices.unique().numel()
    assert used >= 8 and plain.eval()(data).indices.unique().numel() <= 2


def test_ema_restarted_code_starts_over_with_count_one_and_its_vector_as_sum():
    """A restarted code k gets e_k = z (a batch vector), N_k = 1 and S_k = z, so that S_k / N_k = e_k and it is not
    dead again at the next step: with decay 0.9 and threshold 0.5 an unused restarted code has N_k = 0.9 after one
    more step, keeps its vector, and is not restarted a second time."""
    torch.manual_seed(0)
    q = EMAVectorQuantizer(16, 2, decay=0.9, dead_code_threshold=0.5).train()
    data = 4 + 2 * torch.rand(1, 2, 4, 4)
    q(data)  # counts start at 0: every code that this batch leaves unused is restarted
    rows = data.permute(0, 2, 3, 1).reshape(-1, 2)
    restarted = (q.codebook.unsqueeze(1) == rows.unsqueeze(0)).all(2).any(1)
    restarted &= q.ema_counts == 1
    assert int(restarted.sum()) >= 8
    torch.testing.assert_close(q.ema_counts[restarted], torch.ones(int(restarted.sum())), rtol=0, atol=0)
    torch.testing.assert_close(q.ema_sums[restarted], q.codebook[restarted], rtol=0, atol=0)
    before = q.codebook.clone()
    far = torch.full((1, 2, 1, 1), -100.0)  # one vector, won by a single code: the others stay unused this step
    winner = int(q.eval()(far).indices)
    q.train()(far)
    unused = restarted.clone()
    unused[winner] = False
    torch.testing.assert_close(q.ema_counts[unused], torch.full((int(unused.sum()),), 0.9), rtol=1e-6, atol=0)
    assert torch.equal(q.codebook[unused], before[unused])  # not restarted again


def test_fsq_projects_codebook_dim_to_its_levels():
    q = FSQ(16, codebook_size=512)
    assert q.levels == [8, 8, 8]
    assert q(torch.randn(2, 16, 4, 4)).codes.shape == (2, 16, 4, 4)


def test_chunked_nearest_code_matches_brute_force():
    z, codebook = torch.randn(1000, 8), torch.randn(300, 8)
    expected = torch.cdist(z, codebook).argmin(1)
    assert torch.equal(nearest_code(z, codebook, max_elements=300 * 7), expected)


def test_chunked_entropy_matches_direct_computation_and_gradient():
    z = torch.randn(200, 4, requires_grad=True)
    codebook = torch.randn(16, 4, requires_grad=True)
    loss = entropy_loss(z, codebook, temperature=0.5, max_elements=16 * 13)
    p = torch.softmax(-torch.cdist(z, codebook).pow(2) / 0.5, dim=1)
    mean_p = p.mean(0)
    direct = -(p * p.log()).sum(1).mean() + (mean_p * mean_p.log()).sum()
    torch.testing.assert_close(loss, direct, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(loss, [z, codebook])
    g2 = torch.autograd.grad(direct, [z, codebook])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_vq_entropy_term_only_when_enabled_and_training():
    q = VectorQuantizer(32, 8, compute_entropy=True)
    assert "entropy" in q(torch.randn(2, 8, 3, 3)).losses
    assert "entropy" not in q.eval()(torch.randn(2, 8, 3, 3)).losses
    assert "entropy" not in VectorQuantizer(32, 8)(torch.randn(2, 8, 3, 3)).losses


def test_bad_arguments_name_the_config_key():
    with pytest.raises(ValueError, match="codebook.dim"):
        VectorQuantizer(16, 0)
    with pytest.raises(ValueError, match="codebook.size"):
        VectorQuantizer(0, 4)
    with pytest.raises(ValueError, match="l2_norm_mode"):
        VectorQuantizer(16, 4, l2_norm=True, l2_norm_mode="cosine")


def test_simvq_trains_only_the_linear_map():
    q = make("simvq")
    assert "frozen_codebook" in dict(q.named_buffers())
    assert {n for n, _ in q.named_parameters()} == {"codebook_map.weight", "codebook_map.bias"}
    out = q(torch.randn(2, 8, 3, 3, requires_grad=True))
    out.losses["commitment"].backward(retain_graph=True)
    assert q.codebook_map.weight.grad is None or torch.count_nonzero(q.codebook_map.weight.grad) == 0
    out.losses["codebook"].backward()
    assert torch.count_nonzero(q.codebook_map.weight.grad) > 0


def test_simvq_frozen_codebook_has_std_inverse_sqrt_dim():
    q = SimVQ(4096, 64)
    assert q.frozen_codebook.std().item() == pytest.approx(64**-0.5, rel=0.02)


def test_lattice_rounds_to_the_basis_grid_and_basis_gets_the_formula_gradient():
    q = LatticeQuantizer(2, codebook_size=16)
    with torch.no_grad():
        q.basis.copy_(torch.tensor([0.5, -2.0]))
    z = torch.tensor([[0.6, 2.9], [-0.26, -1.1]]).t().reshape(1, 2, 2, 1)
    out = q(z)
    assert out.indices.reshape(2, 2).tolist() == [[1, -1], [-1, 1]]
    torch.testing.assert_close(out.codes.reshape(2, 2).t(), torch.tensor([[0.5, 2.0], [-0.5, -2.0]]))
    out.losses["codebook"].backward(retain_graph=True)
    rows = z.reshape(2, 2).t()
    k = out.indices.reshape(2, 2).float()
    # d/db_j mean_ij (b_j k_ij - z_ij)^2 = sum_i 2 (b_j k_ij - z_ij) k_ij / 4
    expected = (2 * (q.basis.detach() * k - rows) * k).sum(0) / 4
    torch.testing.assert_close(q.basis.grad, expected)
    q.basis.grad = None
    out.losses["negative_basis_norm"].backward()
    torch.testing.assert_close(q.basis.grad, -torch.sign(q.basis.detach()))


def test_lattice_init_bound_follows_the_codebook_size():
    assert LatticeQuantizer(64, codebook_size=512).init_bound == pytest.approx(9.767, abs=1e-3)
    assert LatticeQuantizer(64, codebook_size=512).basis.abs().max() <= 9.768
    assert DenseLatticeQuantizer(64).basis.abs().max() <= 1.0
    assert LatticeQuantizer.codebook_size is None


def test_lfq_signs_indices_and_zero_maps_to_plus_one():
    q = LookupFreeQuantizer(3, bits=3).eval()
    z = torch.tensor([[0.0, -1.0, 2.0], [-0.5, 0.3, -0.1]]).t().reshape(1, 3, 2, 1)
    out = q(z)
    torch.testing.assert_close(out.codes.reshape(3, 2).t(), torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]]))
    assert out.indices.flatten().tolist() == [1 + 4, 2]
    assert LookupFreeQuantizer(16, codebook_size=512).bits == 9
    with pytest.raises(ValueError, match="power of two"):
        LookupFreeQuantizer(16, codebook_size=500)


def test_lfq_entropy_terms_match_a_direct_computation_over_all_codes():
    q = LookupFreeQuantizer(4, bits=4, entropy_temperature=0.5).train()
    z = torch.randn(1, 4, 5, 5)
    out = q(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 4)
    codes = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * 4)
    p = torch.softmax(-torch.cdist(rows, codes).pow(2) / 0.5, dim=1)
    mean_p = p.mean(0)
    torch.testing.assert_close(out.losses["per_sample_entropy"], -(p * p.log()).sum(1).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.losses["codebook_entropy"], (mean_p * mean_p.log()).sum(), rtol=1e-5, atol=1e-5)


def test_codebook_entropy_epsilon_is_inside_the_log():
    """visual-tokenizer-pytorch's entropy_loss: -sum_k p_k log(p_k + 1e-5) for the batch-average entropy; the
    per-sample entropy is unchanged. Codes far from every z have p_k << 1e-5, where the two logs differ most."""
    z = torch.randn(64, 4)
    codebook = torch.cat([torch.randn(8, 4), 3 + 0.1 * torch.randn(8, 4)])
    exact = entropy_terms(z, codebook, temperature=0.5)
    offset = entropy_terms(z, codebook, temperature=0.5, codebook_entropy_epsilon=1e-5)
    p = torch.softmax(-torch.cdist(z, codebook).pow(2) / 0.5, dim=1)
    mean_p = p.mean(0)
    torch.testing.assert_close(offset[0], exact[0])
    torch.testing.assert_close(offset[1], (mean_p * torch.log(mean_p + 1e-5)).sum(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(exact[1], (mean_p * torch.log(mean_p.clamp_min(1e-12))).sum(), rtol=1e-5, atol=1e-6)
    assert mean_p.min() < 1e-6 and not torch.isclose(offset[1], exact[1], rtol=0, atol=1e-6)
    # the quantizers pass it through
    vq = VectorQuantizer(16, 4, compute_entropy=True, entropy_temperature=0.5, codebook_entropy_epsilon=1e-5).train()
    vq.codebook.data.copy_(codebook)
    torch.testing.assert_close(vq(z.t().reshape(1, 4, 64, 1)).losses["entropy"], offset[0] + offset[1])
    lfq = LookupFreeQuantizer(4, bits=4, entropy_temperature=0.5, codebook_entropy_epsilon=1e-5).train()
    expected = entropy_terms(z, lfq.implicit_codebook(z.device), 0.5, codebook_entropy_epsilon=1e-5)[1]
    torch.testing.assert_close(lfq(z.t().reshape(1, 4, 64, 1)).losses["codebook_entropy"], expected)


def _direct_lfq_terms(z, temperature):
    """The O(N 2^bits) definition: p_i = softmax(-||z_i - c||^2 / tau) over every code, through the chunked VQ path."""
    return entropy_terms(z, sign_codes(z.shape[1], z.device, z.dtype), temperature)


def _values_and_gradient(terms, z):
    z = z.clone().requires_grad_()
    per_sample, codebook = terms(z)
    (grad,) = torch.autograd.grad(0.3 * per_sample + 0.7 * codebook, z)
    return torch.stack([per_sample, codebook]).detach(), grad


@pytest.mark.parametrize("bits", [1, 4, 5, 7])
@pytest.mark.parametrize("temperature", [0.5, 0.01])
@pytest.mark.parametrize("max_elements", [DEFAULT_MAX_ELEMENTS, 24])  # one chunk; many checkpointed chunks
def test_lfq_factorised_entropy_is_the_direct_one_in_values_and_gradients(bits, temperature, max_elements):
    z = torch.randn(37, bits, dtype=torch.float64) * 0.3
    scale = logit_scale_for_temperature(temperature)
    fast = _values_and_gradient(lambda x: lfq_entropy_terms(x, scale, max_elements), z)
    direct = _values_and_gradient(lambda x: _direct_lfq_terms(x, temperature), z)
    torch.testing.assert_close(fast, direct, rtol=0, atol=1e-10)  # exact up to float64 rounding
    if temperature == 0.5:  # at tau = 0.01 the direct fp32 path itself is 3e-5 off in its gradient
        fast32 = _values_and_gradient(lambda x: lfq_entropy_terms(x, scale, max_elements), z.float())
        direct32 = _values_and_gradient(lambda x: _direct_lfq_terms(x, temperature), z.float())
        torch.testing.assert_close(fast32, direct32, rtol=1e-5, atol=1e-5)


def test_lfq_code_distribution_is_indexed_like_the_tokens():
    z = torch.randn(50, 5)
    direct = torch.softmax(-torch.cdist(z, sign_codes(5)).pow(2) / 0.1, dim=1).mean(0)
    torch.testing.assert_close(code_distribution(z, logit_scale_for_temperature(0.1)), direct, rtol=1e-5, atol=1e-7)
    q = LookupFreeQuantizer(5, bits=5).eval()
    torch.testing.assert_close(q.lookup(torch.arange(32)), sign_codes(5))


def test_lfq_quantizer_losses_and_parameter_gradients_equal_the_direct_computation():
    q = LookupFreeQuantizer(6, bits=5, entropy_temperature=0.2).train()  # projected 6 -> 5 bits
    z = torch.randn(2, 6, 4, 4)
    out = q(z)
    loss = out.losses["per_sample_entropy"] + out.losses["codebook_entropy"]
    fast = torch.autograd.grad(loss, list(q.project_in.parameters()))
    rows = q.project_in(z.permute(0, 2, 3, 1).reshape(-1, 6))
    per_sample, codebook = _direct_lfq_terms(rows, 0.2)
    direct = torch.autograd.grad(per_sample + codebook, list(q.project_in.parameters()))
    torch.testing.assert_close(out.losses["per_sample_entropy"], per_sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.losses["codebook_entropy"], codebook, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return result


def test_lfq_entropy_memory_stays_bounded_in_forward_and_backward():
    bits, n, budget = 10, 512, 2**11  # 32-row chunks; unchunked, one half-code matrix is n x 2^5 = 2^14 elements
    z = torch.randn(n, bits, requires_grad=True)
    with _LargestTensor() as recorder:
        per_sample, codebook = lfq_entropy_terms(z, 200.0, max_elements=budget)
        (per_sample + codebook).backward()
    assert recorder.largest <= max(budget, 2**bits, n * bits)


def test_lfq_entropy_at_18_bits():
    q = LookupFreeQuantizer(18, bits=18).train()
    z = torch.randn(2, 18, 8, 8, requires_grad=True)
    out = q(z)
    (out.losses["per_sample_entropy"] + out.losses["codebook_entropy"]).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert float(out.losses["codebook_entropy"].detach()) >= -18 * math.log(2) - 1e-4
    rows = z.detach().permute(0, 2, 3, 1).reshape(-1, 18)
    torch.testing.assert_close(code_distribution(rows, q.entropy_logit_scale).sum(), torch.tensor(1.0))


def test_lfq_entropy_with_many_bits_matches_a_direct_computation():
    """16 bits: index k <-> code bits (k >> i) & 1, so both entropy terms match a dense softmax over all 2^16 codes."""
    q = LookupFreeQuantizer(16, bits=16, entropy_temperature=0.5).train()
    z = torch.randn(1, 16, 8, 8)
    out = q(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 16)
    k = torch.arange(2**16)
    codes = ((k.unsqueeze(1) >> torch.arange(16)) & 1).float() * 2 - 1
    p = torch.softmax(-torch.cdist(rows, codes).pow(2) / 0.5, dim=1)
    mean_p = p.mean(0)
    per_sample = -(p * p.clamp_min(1e-30).log()).sum(1).mean()
    torch.testing.assert_close(out.losses["per_sample_entropy"], per_sample, rtol=1e-4, atol=1e-4)
    codebook_term = (mean_p * mean_p.clamp_min(1e-30).log()).sum()
    torch.testing.assert_close(out.losses["codebook_entropy"], codebook_term, rtol=1e-4, atol=1e-4)


def test_gumbel_eval_takes_the_argmax_and_kl_is_zero_for_uniform_logits():
    q = make("gumbel").eval()
    z = torch.randn(2, 8, 3, 3)
    out = q(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.equal(out.indices.flatten(), q.to_logits(rows).argmax(1))
    with torch.no_grad():
        q.to_logits.weight.zero_()
        q.to_logits.bias.zero_()
    assert abs(float(q(z).losses["kl"].detach())) < 1e-6


def test_gumbel_training_is_the_straight_through_gumbel_softmax():
    """Forward: the embedding of argmax(l + g). Backward: the gradient of the soft sample softmax((l + g) / tau)
    (Jang et al. 2017, straight-through Gumbel estimator), for the logits' linear map and the embedding alike. The
    noise g is drawn again here from the same seed, as torch.nn.functional.gumbel_softmax draws it."""
    q = GumbelQuantizer(16, 8, temperature=0.5).train()
    z = torch.randn(2, 8, 3, 3)
    upstream = torch.randn(2, 8, 3, 3)
    torch.manual_seed(7)
    out = q(z)
    ((out.codes * upstream).sum() + out.losses["kl"]).backward()

    rows = z.permute(0, 2, 3, 1).reshape(-1, 8)
    logits = rows @ q.to_logits.weight.detach().t() + q.to_logits.bias.detach()
    torch.manual_seed(7)
    noise = -torch.empty_like(logits).exponential_().log()
    indices = (logits + noise).argmax(1)
    assert torch.equal(out.indices.flatten(), indices)
    torch.testing.assert_close(out.codes.permute(0, 2, 3, 1).reshape(-1, 8), q.embedding.detach()[indices])

    weight = q.to_logits.weight.detach().clone().requires_grad_(True)
    bias = q.to_logits.bias.detach().clone().requires_grad_(True)
    embedding = q.embedding.detach().clone().requires_grad_(True)
    logits = rows @ weight.t() + bias
    soft = torch.softmax((logits + noise) / 0.5, dim=1)
    sample = F.one_hot(indices, 16).float() + soft - soft.detach()
    codes = sample @ embedding
    p = torch.softmax(logits, dim=1)
    kl = (p * torch.log(p * 16)).sum(1).mean()  # KL(softmax(l) || uniform over the 16 codes)
    torch.testing.assert_close(out.losses["kl"], kl.detach())
    ((codes * upstream.permute(0, 2, 3, 1).reshape(-1, 8)).sum() + kl).backward()
    for got, want in ((q.to_logits.weight, weight), (q.to_logits.bias, bias), (q.embedding, embedding)):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-6)


def test_gumbel_quantizer_learns_to_pick_a_target_code():
    """Gradient descent through the straight-through sample moves the tokens toward a target code."""
    q = GumbelQuantizer(8, 4, temperature=1.0).train()
    z = torch.randn(1, 4, 8, 8)
    target = q.embedding.detach()[3].view(1, 4, 1, 1)
    optimizer = torch.optim.Adam(q.to_logits.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        F.mse_loss(q(z).codes, target.expand_as(z)).backward()
        optimizer.step()
    assert (q.eval()(z).indices == 3).float().mean() > 0.9


def test_rvq_stages_quantize_residuals_and_losses_sum_per_stage():
    """Three stages, so that stage 3 must quantize z - q_1 - q_2 (with two, z - q_1 alone would pass)."""
    q = ResidualVectorQuantizer(16, 4, num_stages=3)
    with torch.no_grad():
        q.codebooks.copy_(torch.randn_like(q.codebooks))
    z = torch.randn(1, 4, 3, 3)
    out = q(z)
    rows = z.permute(0, 2, 3, 1).reshape(-1, 4)
    residual, total, expected, ids = rows, torch.zeros_like(rows), 0, []
    for stage in range(3):
        k = torch.cdist(residual, q.codebooks[stage]).argmin(1)
        code = q.codebooks[stage][k].detach()
        expected = expected + F.mse_loss(residual, code)
        total, residual, ids = total + code, residual - code, [*ids, k]
    assert torch.equal(out.indices.reshape(-1, 3), torch.stack(ids, 1))
    torch.testing.assert_close(out.losses["commitment"], expected)
    torch.testing.assert_close(out.losses["codebook"], expected.detach())
    torch.testing.assert_close(out.codes.permute(0, 2, 3, 1).reshape(-1, 4), total)
    assert ResidualVectorQuantizer(16, 4, num_stages=3, shared_codebook=True).codebooks.shape == (1, 16, 4)
