"""rFID protocols: every choice that changes an rFID value, pinned under one id (``metrics.rfid.protocol=ID``).

The same checkpoint scores differently under different FID implementations (FoundationVision/LlamaGen issue 34: 2.19
in the paper, 2.11 with clean-fid, 4.28 with the ADM evaluator against another reference set), because they differ in
the feature network and its weights, the reference images, how many images, how images reach 299 x 299 (PIL bicubic
on floats vs TensorFlow-1 bilinear on tensors), and how floats become 8-bit pixels. A protocol fixes all of them; a
rFID is only ever reported with the id of the protocol that produced it, and ``vqbench.report`` keeps rFIDs of
different protocols apart.

Every protocol computes

    FID = ||mu_r - mu_o||^2 + Tr(S_r + S_o - 2 (S_r S_o)^(1/2))

(Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", arXiv
1706.08500) over 2048-d pool features of the reconstructions (r) and of the reference images (o), with unbiased
(n - 1) covariances, in float64, over every image of the evaluated split (no subsampling).
"""

from __future__ import annotations

from dataclasses import dataclass

TORCH_FIDELITY_INCEPTION = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
CLEAN_FID_INCEPTION = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)

#: how [0, 1] floats become 8-bit pixels
QUANTISATIONS = {
    "round": "uint8 = floor(255 v + 0.5) of the clamped [0, 1] image: what torchvision.utils.save_image writes to a "
    "PNG, so the protocol equals reading lossless PNG files back",
    "truncate": "uint8 = floor(255 v) of the clamped [0, 1] image: torchmetrics' FrechetInceptionDistance with "
    "normalize=True, (imgs * 255).byte()",
}
#: how the 8-bit image reaches the network's 299 x 299 input
RESIZES = {
    "tf1_bilinear": "bilinear to 299 x 299 as TensorFlow 1's resize_bilinear (align_corners=False, no antialiasing; "
    "torch_fidelity.interpolate_compat_tensorflow.interpolate_bilinear_2d_like_tensorflow1x), inside the network",
    "pil_bicubic": "PIL bicubic to 299 x 299 of each channel as a float32 image (mode 'F'), clipped to [0, 255], "
    "not re-quantised (cleanfid.resize.build_resizer('clean'))",
}
#: the feature networks; both carry the TensorFlow Inception-v3 of 2015-12-05 (the FID weights of Heusel et al.)
EXTRACTORS = {
    "torch_fidelity_inception_v3": "torch-fidelity's inception-v3-compat (FeatureExtractorInceptionV3), 2048-d pool "
    "features, input (x - 128) / 128",
    "clean_fid_inception_v3": "clean-fid's InceptionV3W (NVlabs' TorchScript export of the same graph), 2048-d pool "
    "features, input (x - 128) / 128",
}


@dataclass(frozen=True)
class RFIDProtocol:
    """One way of computing rFID, with every choice that moves its value."""

    id: str
    description: str
    extractor: str  # a key of EXTRACTORS
    weights_url: str  # the weights file (looked for in $TORCH_HOME/hub/checkpoints by its name)
    quantisation: str  # a key of QUANTISATIONS
    resize: str  # a key of RESIZES
    reference: str = "the originals of the evaluated split, preprocessed as the model's input (no extra crop)"
    images: str = "every image of the evaluated split"
    dtype: str = "float32 network, float64 statistics"
    file_round_trip: str = "none needed: the quantisation equals a lossless PNG round trip"

    @property
    def weights_file(self) -> str:
        return self.weights_url.rsplit("/", 1)[-1]

    def as_record(self) -> dict[str, str]:
        """The protocol as metrics.json stores it beside the value."""
        return {
            "id": self.id,
            "description": self.description,
            "feature_extractor": EXTRACTORS[self.extractor],
            "weights": self.weights_file,
            "quantisation": QUANTISATIONS[self.quantisation],
            "resize": RESIZES[self.resize],
            "reference": self.reference,
            "images": self.images,
            "dtype": self.dtype,
            "file_round_trip": self.file_round_trip,
        }


PROTOCOLS: dict[str, RFIDProtocol] = {
    protocol.id: protocol
    for protocol in (
        RFIDProtocol(
            id="torch_fidelity",
            description="torch-fidelity 0.3/0.4 defaults (torch_fidelity.calculate_metrics(input1, input2, fid=True)) "
            "on the PNG pairs of the originals and reconstructions; vqbench's default. xyfJASON/visual-tokenizer-"
            "pytorch evaluate.py writes those PNG pairs with torchvision's save_image for rFID and, from ff3c255 "
            "(2024-11-12; 351d29d evaluate.py:148-152) on, calls exactly this function on them; the commits of its "
            "CelebA 64x64 (07352b4) and ImageNet 256x256 (6fb0cc9) tables write the PNGs without naming the FID tool",
            extractor="torch_fidelity_inception_v3",
            weights_url=TORCH_FIDELITY_INCEPTION,
            quantisation="round",
            resize="tf1_bilinear",
        ),
        RFIDProtocol(
            id="torchmetrics_normalize",
            description="torchmetrics FrechetInceptionDistance(feature=2048, normalize=True) fed [0, 1] floats: "
            "Doraemonzzz/vector-quantize eval_ddp.py at 2010474 (the ImageNet 128x128 table). The original also "
            "leaves reconstructions unclamped before (x * 255).byte() and averages one FID per GPU (8); vqbench "
            "clamps and pools every image into one FID",
            extractor="torch_fidelity_inception_v3",
            weights_url=TORCH_FIDELITY_INCEPTION,
            quantisation="truncate",
            resize="tf1_bilinear",
        ),
        RFIDProtocol(
            id="clean_fid",
            description="clean-fid 0.1.35 mode='clean' (Parmar et al., 'On Aliased Resizing and Surprising "
            "Subtleties in GAN Evaluation', arXiv 2104.11222): cleanfid.fid.compute_fid(dir1, dir2) on the PNG "
            "pairs",
            extractor="clean_fid_inception_v3",
            weights_url=CLEAN_FID_INCEPTION,
            quantisation="round",
            resize="pil_bicubic",
        ),
    )
}

DEFAULT_PROTOCOL = "torch_fidelity"


def get_protocol(protocol_id: str) -> RFIDProtocol:
    """The protocol named ``protocol_id``; ValueError naming the choices otherwise."""
    if protocol_id not in PROTOCOLS:
        raise ValueError(
            f"metrics.rfid.protocol={protocol_id} is not an rFID protocol; choose one of {', '.join(PROTOCOLS)}"
        )
    return PROTOCOLS[protocol_id]
