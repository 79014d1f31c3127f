"""Records what LlamaGen's own tokenizer code computes on random weights, for ``tests/test_convert.py``.

    git clone https://github.com/FoundationVision/LlamaGen /tmp/LlamaGen   # or export any commit of it
    python tests/reference/llamagen/record.py /tmp/LlamaGen --commit $(git -C /tmp/LlamaGen log -1 --format=%H)

It imports ``tokenizer/tokenizer_image/vq_model.py`` from the checkout (nothing of LlamaGen is copied into vqbench),
builds its ``VQModel`` with l2-normalised codes, narrows the encoder and decoder through their own ``ch`` argument
(``ModelArgs`` has no width; the layout is VQ-16's, at 32 instead of 128 channels and two levels), gives every
parameter random values (rounded to float16 so that the stored half-precision weights are exact), and stores the
weights, a random input and what ``VQModel`` computes from it: the pre-quantization latent, the token ids and the
decoded image. The converter test rebuilds LlamaGen's checkpoint layout from these weights, converts it and must
reproduce the three outputs. The stored ``vq_model_random.pt`` was recorded from commit
ce98ec41803a74a90ce68c40ababa9eaeffeb4ec (also stored in the file, under ``commit``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

OUT = Path(__file__).with_name("vq_model_random.pt")
MODEL_ARGS = dict(codebook_size=64, codebook_embed_dim=8, codebook_l2_norm=True, z_channels=32)
WIDTH = dict(ch=32, ch_mult=[1, 2], num_res_blocks=2, z_channels=32)


def load_vq_model(checkout: Path):
    path = checkout / "tokenizer" / "tokenizer_image" / "vq_model.py"
    spec = importlib.util.spec_from_file_location("llamagen_vq_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout (or export) of FoundationVision/LlamaGen")
    parser.add_argument("--commit", required=True, help="the checkout's commit, recorded beside the outputs")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    vq = load_vq_model(args.checkout)
    torch.manual_seed(0)
    model = vq.VQModel(vq.ModelArgs(encoder_ch_mult=WIDTH["ch_mult"], decoder_ch_mult=WIDTH["ch_mult"], **MODEL_ARGS))
    model.encoder = vq.Encoder(**WIDTH)
    model.decoder = vq.Decoder(**WIDTH)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("codebook_used"):
                continue
            if ".norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.copy_(0.1 * torch.randn_like(parameter))
            elif name == "quantize.embedding.weight":
                parameter.copy_(torch.randn_like(parameter))
            parameter.copy_(parameter.half().float())
    model.eval()
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latent = model.quant_conv(model.encoder(image))
        quantized, _, (_, _, indices) = model.quantize(latent)
        decoded = model.decode_code(indices, quantized.shape)
    state = {k: v.half() for k, v in model.state_dict().items() if not k.endswith("codebook_used")}
    torch.save(
        {
            "source": "FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py",
            "commit": args.commit,
            "model_args": MODEL_ARGS,
            "width": WIDTH,
            "state_dict": state,
            "input": image,
            "latent": latent,
            "indices": indices.reshape(2, *latent.shape[-2:]),
            "decoded": decoded,
        },
        args.out,
    )
    print(f"wrote {args.out}: {sum(v.numel() for v in state.values())} weights, token grid {tuple(latent.shape[-2:])}")


if __name__ == "__main__":
    main()
