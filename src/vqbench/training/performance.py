"""The speed levers of the ``performance`` group: TF32, the channels-last layout, ``torch.compile``, fused Adam.

None of them changes the model or the objective; each changes the floating-point arithmetic a little
(docs/performance.md). The quantizers are never compiled and always run in IEEE fp32 (``Quantizer.forward``): rounding
and nearest-code search are what the suite measures.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vqbench.errors import ConfigError

#: The switches of the ``performance`` config group (conf/performance/plain.yaml, gpu.yaml), each a boolean.
SWITCHES = ("compile", "channels_last", "tf32", "fused_adam")


def check_performance_settings(performance: Any) -> None:
    """``performance`` is the config's performance node; a switch it lacks is off."""
    for switch in SWITCHES:
        value = performance.get(switch, False)
        if not isinstance(value, bool):
            raise ConfigError(
                f"performance.{switch} must be true or false, got {value!r}; performance=gpu turns every speed "
                "switch on, performance=plain (the default) turns them off"
            )


def trains_on_cuda(cfg) -> bool:
    """Whether a run's Lightning trainer will use CUDA (``trainer.accelerator`` auto, gpu or cuda, and a GPU
    present)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores (Ampere and later; 10-bit mantissa in the products, fp32 accumulation) for fp32 matmuls and
    cuDNN convolutions, or IEEE fp32 for both. Only CUDA kernels read these flags."""
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def compiled_networks(module: nn.Module) -> list[nn.Module]:
    """What ``performance.compile`` compiles: the tokenizer's encoder and decoder, and the discriminator; only the
    encoder when the GAN loss has the adaptive weight (taming's ``loss.adversarial.adaptive``).

    The adaptive weight differentiates the reconstruction and the generator loss by the decoder's last layer with
    ``retain_graph=True`` before the full backward pass, so the backward of the decoder and discriminator runs more
    than once per step. Inductor's compiled backward reuses its saved activations' buffers in place, and a second
    pass then reads overwritten activations: with torch 2.14 on a CPU the gradients of the decoder's earlier layers
    came out wrong, without an error (tests/test_performance.py). The encoder's backward runs once.
    """
    if module.discriminator is not None and module.adversarial.adaptive:
        return [module.tokenizer.encoder]
    networks = [module.tokenizer.encoder, module.tokenizer.decoder]
    if module.discriminator is not None:
        networks.append(module.discriminator)
    return networks


def speed_up(module: nn.Module, channels_last: bool = False, compile: bool = False) -> None:
    """Applies the layout and compilation to a TokenizerModule in place (its state-dict keys do not change).

    channels_last: every 4-D parameter and buffer (tokenizer, discriminator, perceptual network, weight EMA) in NHWC;
    activations follow the weights. compile: ``nn.Module.compile`` on each of ``compiled_networks``, compiled on
    their first call.
    """
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if compile:
        for network in compiled_networks(module):
            network.compile()
