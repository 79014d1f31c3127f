import torch

from vqbench.models import SimpleCNNDecoder, SimpleCNNEncoder, Tokenizer
from vqbench.quantizers import VectorQuantizer


def test_simple_cnn_parameter_count_matches_the_spec():
    tokenizer = Tokenizer(SimpleCNNEncoder(), VectorQuantizer(512, 64), SimpleCNNDecoder())
    assert sum(p.numel() for p in tokenizer.parameters()) == 4_928_835


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
