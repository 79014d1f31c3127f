"""The rotation trick, k-means initialisation and dead-code restart against lucidrains/vector-quantize-pytorch
(``pip install -e '.[test]'`` installs the pinned version) on identical inputs."""

import pytest
import torch
import torch.nn.functional as F

from vqbench.quantizers import EMAVectorQuantizer, SimVQ, VectorQuantizer
from vqbench.quantizers.distances import nearest_code
from vqbench.quantizers.kmeans import kmeans
from vqbench.quantizers.rotation import rotate_onto

vqp = pytest.importorskip("vector_quantize_pytorch.vector_quantize_pytorch", reason="pip install -e '.[test]'")
EPS = torch.finfo(torch.float32).eps
K, D = 32, 8


def _rows(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ["vq", "ema", "simvq"])
def test_rotation_trick_keeps_the_forward_value_and_gives_the_rotated_gradient(name):
    """Forward: the code (as the straight-through estimator, up to the rounding of R e, a few eps x |e|). Backward:
    vector-quantize-pytorch's ``rotate_to`` gradient, and its norm is lambda = ||q|| / ||z|| times the incoming one."""
    make = {"vq": VectorQuantizer, "ema": EMAVectorQuantizer, "simvq": SimVQ}[name]
    q = make(K, D, rotation_trick=True).train()
    if name == "vq":
        q.codebook.data.normal_()
    plain = make(K, D).train()
    plain.load_state_dict(q.state_dict())
    z = torch.randn(2, D, 3, 3, requires_grad=True)
    probe = torch.randn(2, D, 3, 3)
    out, ref = q(z), plain(z)
    assert torch.equal(out.indices, ref.indices)
    # R is ill-conditioned where z and q point apart: w = (z^ + q^) / ||z^ + q^|| carries eps / ||z^ + q^||
    qr, zr_ = _rows(ref.codes.detach()), _rows(z.detach())
    lam = qr.norm(dim=1) / zr_.norm(dim=1)
    cond = (F.normalize(zr_, dim=1) + F.normalize(qr, dim=1)).norm(dim=1)
    # three terms of size up to 2 ||z|| from dot products over D channels: 8 D eps before the conditioning
    bound = 8 * D * EPS * (lam * zr_.norm(dim=1) / cond).max().item()
    torch.testing.assert_close(out.codes, ref.codes, rtol=0, atol=bound)
    grad = torch.autograd.grad((out.codes * probe).sum(), z, retain_graph=True)[0]
    zr = _rows(z.detach()).requires_grad_(True)
    expected = torch.autograd.grad((vqp.rotate_to(zr, qr) * _rows(probe)).sum(), zr)[0]
    g_bound = 8 * D * EPS * (lam * _rows(probe).norm(dim=1) / cond).max().item()
    torch.testing.assert_close(_rows(grad), expected, rtol=0, atol=g_bound)
    if name == "vq":  # the codebook learns from its own loss term only, as with the straight-through estimator
        assert torch.autograd.grad((out.codes * probe).sum(), q.codebook, allow_unused=True)[0] is None
    scale = _rows(ref.codes).norm(dim=1) / _rows(z).norm(dim=1)
    torch.testing.assert_close(_rows(grad).norm(dim=1), scale.detach() * _rows(probe).norm(dim=1), rtol=1e-5, atol=0)


def test_rotation_trick_vq_equals_vector_quantize_pytorch_module():
    """The whole VectorQuantize(rotation_trick=True) with a learnable codebook: same codes, ids and input gradient."""
    ref = vqp.VectorQuantize(D, K, rotation_trick=True, learnable_codebook=True, ema_update=False).train()
    q = VectorQuantizer(K, D, rotation_trick=True).train()
    q.codebook.data.copy_(ref._codebook.embed.data[0])
    x = torch.randn(2, 9, D, requires_grad=True)
    probe = torch.randn(2, 9, D)
    codes, ids, _ = ref(x)
    z = x.detach().reshape(2, 3, 3, D).permute(0, 3, 1, 2).requires_grad_(True)
    out = q(z)
    assert torch.equal(out.indices.reshape(2, 9), ids)
    mine = out.codes.permute(0, 2, 3, 1).reshape(2, 9, D)
    torch.testing.assert_close(mine, codes, rtol=8 * EPS, atol=8 * EPS * codes.abs().max().item())
    g_ref = torch.autograd.grad((codes * probe).sum(), x)[0]
    g = torch.autograd.grad((mine * probe).sum(), z)[0].permute(0, 2, 3, 1).reshape(2, 9, D)
    torch.testing.assert_close(g, g_ref, rtol=16 * EPS, atol=16 * EPS * g_ref.abs().max().item())


def test_rotation_of_a_vector_onto_itself_is_the_identity():
    e = torch.randn(5, D, requires_grad=True)
    g = torch.randn(5, D)
    (grad,) = torch.autograd.grad((rotate_onto(e, e.detach()) * g).sum(), e)
    torch.testing.assert_close(grad, g, rtol=8 * EPS, atol=8 * EPS * g.abs().max().item())


@pytest.mark.parametrize("cosine", [False, True])
def test_kmeans_equals_vector_quantize_pytorch_kmeans(cosine):
    """Same initial centroids, same Lloyd steps: the same assignment counts and centroids (sums over up to 400 rows:
    400 eps relative)."""
    samples = torch.cat([torch.randn(100, D) + 3 * torch.randn(1, D) for _ in range(4)])
    initial = samples[torch.randperm(400)[:K]]
    means, counts = kmeans(samples, K, iterations=6, cosine=cosine, initial=initial)
    ref_samples = F.normalize(samples, dim=1) if cosine else samples
    ref_initial = F.normalize(initial, dim=1) if cosine else initial
    ref_means, ref_counts = vqp.kmeans(
        ref_samples[None], K, 6, use_cosine_sim=cosine, sample_fn=lambda s, n: ref_initial[None]
    )
    torch.testing.assert_close(counts, ref_counts[0].float(), rtol=0, atol=0)
    torch.testing.assert_close(means, ref_means[0], rtol=400 * EPS, atol=400 * EPS * 4)


def test_kmeans_init_equals_vector_quantize_pytorch_kmeans_init():
    """VectorQuantize(kmeans_init=True) draws its initial centroids with the same randperm call; from the same seed
    both end with the same codebook after the first training forward."""
    ref = vqp.VectorQuantize(D, K, kmeans_init=True, kmeans_iters=5, learnable_codebook=True, ema_update=False)
    q = VectorQuantizer(K, D, init="kmeans", kmeans_iterations=5).train()
    x = torch.randn(4, 25, D) * 2
    torch.manual_seed(7)
    ref.train()(x)
    torch.manual_seed(7)
    q(x.reshape(4, 5, 5, D).permute(0, 3, 1, 2))
    torch.testing.assert_close(q.codebook.data, ref._codebook.embed.data[0], rtol=100 * EPS, atol=100 * EPS * 8)


def test_kmeans_init_runs_once_after_the_configured_batches_and_survives_a_checkpoint():
    q = VectorQuantizer(K, D, init="kmeans", kmeans_batches=2).train()
    initial = q.codebook.detach().clone()
    q(torch.randn(2, D, 4, 4) + 5)
    assert torch.equal(q.codebook.detach(), initial)  # still collecting
    q(torch.randn(2, D, 4, 4) + 5)
    fitted = q.codebook.detach().clone()
    assert (fitted.mean() - 5).abs() < 1  # centroids of the data, not U(-1/K, 1/K)
    resumed = VectorQuantizer(K, D, init="kmeans", kmeans_batches=2).train()
    resumed.load_state_dict(q.state_dict())
    assert bool(resumed.kmeans.done) and resumed.kmeans.is_done
    for _ in range(2):
        resumed(torch.randn(2, D, 4, 4) - 5)
    assert torch.equal(resumed.codebook.detach(), fitted)  # no second initialisation


def test_ema_kmeans_init_sets_counts_and_sums_to_the_clusters():
    """After k-means: N = cluster sizes, S = N c; the same forward then applies the EMA update of its batch."""
    z = torch.randn(2, D, 8, 8)
    rows = _rows(z)
    torch.manual_seed(3)
    means, counts = kmeans(rows, K, 10)
    assignment = nearest_code(rows, means)
    n = torch.zeros(K).index_add_(0, assignment, torch.ones(rows.shape[0]))
    sums = torch.zeros(K, D).index_add_(0, assignment, rows)
    q = EMAVectorQuantizer(K, D, init="kmeans", decay=0.5).train()
    torch.manual_seed(3)
    q(z)
    torch.testing.assert_close(q.ema_counts, 0.5 * counts + 0.5 * n, rtol=0, atol=0)
    torch.testing.assert_close(q.ema_sums, 0.5 * means * counts[:, None] + 0.5 * sums, rtol=4 * EPS, atol=4 * EPS)
    assert bool(q.kmeans.done)


def test_ema_kmeans_init_needs_the_standard_update_rule():
    with pytest.raises(ValueError, match="codebook.init"):
        EMAVectorQuantizer(K, D, init="kmeans", update_rule="pytorch_vq_vae")


def test_dead_code_restart_follows_vector_quantize_pytorch():
    """threshold_ema_dead_code with a learnable codebook: the same usage counts and the same codes restarted, each on a
    vector of the batch. The replacement vectors are random in both, so vqbench's codebook is copied over after each
    step to keep the two in step."""
    threshold, decay = 0.7, 0.9  # counts start at 1: a code unused for 4 steps has 0.9^4 < 0.7
    ref = vqp.VectorQuantize(
        D, K, learnable_codebook=True, ema_update=False, threshold_ema_dead_code=threshold, decay=decay
    ).train()
    q = VectorQuantizer(K, D, dead_code_threshold=threshold, usage_decay=decay).train()
    q.codebook.data.copy_(ref._codebook.embed.data[0])
    restarted_any = False
    for step in range(6):
        x = torch.randn(2, 36, D) * (1 + step)
        before = q.codebook.detach().clone()
        ref(x)
        q(x.reshape(2, 6, 6, D).permute(0, 3, 1, 2))
        torch.testing.assert_close(q.usage_counts, ref._codebook.cluster_size.data[0], rtol=4 * EPS, atol=0)
        moved = (q.codebook.detach() != before).any(1)
        moved_ref = (ref._codebook.embed.data[0] != before).any(1)
        assert torch.equal(moved, moved_ref)
        restarted_any |= bool(moved.any())
        rows = x.reshape(-1, D)
        assert all((rows == c).all(1).any() for c in q.codebook.detach()[moved])
        ref._codebook.embed.data[0].copy_(q.codebook.detach())
    assert restarted_any


def test_kmeans_memory_stays_bounded_at_16384_codes():
    """The assignment step is the chunked nearest-code search: at most 2^25 distances at once (unchunked: 2^27)."""
    from tests.test_quantizers import _LargestTensor
    from vqbench.quantizers.distances import DEFAULT_MAX_ELEMENTS

    samples = torch.randn(8192, 4)
    with _LargestTensor() as recorder:
        kmeans(samples, 16384, iterations=1)
    assert recorder.largest <= DEFAULT_MAX_ELEMENTS
