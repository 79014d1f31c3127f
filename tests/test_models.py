import pytest
import torch

from vqbench.models import SimpleCNNDecoder, SimpleCNNEncoder, Tokenizer
from vqbench.models.simple_cnn import ResidualBlock
from vqbench.quantizers import VectorQuantizer


@pytest.mark.parametrize("skip", ["relu", "identity"])
def test_simple_cnn_parameter_count_matches_the_spec(skip):
    encoder, decoder = SimpleCNNEncoder(residual_skip=skip), SimpleCNNDecoder(residual_skip=skip)
    tokenizer = Tokenizer(encoder, VectorQuantizer(512, 64), decoder)
    assert sum(p.numel() for p in tokenizer.parameters()) == 4_928_835


def test_residual_block_skip_is_relu_by_default_as_in_the_original():
    """visual-tokenizer-pytorch's block starts with nn.ReLU(inplace=True), which overwrites x before x + f(x) is
    formed: it computes relu(x) + f(x). ``identity`` is the textbook x + f(x)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    block = SimpleCNNEncoder(hidden_channels=4, out_channels=6)[5]
    assert isinstance(block, ResidualBlock)
    torch.testing.assert_close(block(x), torch.relu(x) + block.body(x))
    identity = ResidualBlock(6, skip="identity")
    identity.body.load_state_dict(block.body.state_dict())
    torch.testing.assert_close(identity(x), x + block.body(x))
    assert all(isinstance(b.skip, torch.nn.ReLU) for b in list(SimpleCNNDecoder(hidden_channels=4, in_channels=6))[:2])
    with pytest.raises(ValueError, match="residual_skip"):
        ResidualBlock(6, skip="gelu")


def test_tokenizer_shapes_and_decode_from_indices():
    tokenizer = Tokenizer(
        SimpleCNNEncoder(hidden_channels=8, out_channels=16),
        VectorQuantizer(32, 4),
        SimpleCNNDecoder(hidden_channels=8, in_channels=16),
    ).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    reconstruction, quantized = tokenizer(images)
    assert reconstruction.shape == images.shape
    assert quantized.indices.shape == (2, 8, 8)
    # Encoder -> 1x1 conv to codebook.dim -> quantizer -> 1x1 conv back -> decoder, in that order
    z = tokenizer.pre_quant(tokenizer.encoder(images))
    assert z.shape == (2, 4, 8, 8)
    expected = tokenizer.quantizer(z)
    assert torch.equal(quantized.indices, expected.indices)
    torch.testing.assert_close(reconstruction, tokenizer.decoder(tokenizer.post_quant(expected.codes)))
    torch.testing.assert_close(tokenizer.decode_indices(quantized.indices), reconstruction)


def test_module_layer_imports_neither_lightning_nor_hydra():
    import subprocess
    import sys

    code = (
        "import sys, vqbench.models, vqbench.quantizers; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
