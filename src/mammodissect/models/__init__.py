"""Models: specs to targets and dissectors.

Each model family is one module registering its loaders; adding a family
(Mammo-CLIP, say) means adding one module and importing it here.
"""

from mammodissect.models import (  # noqa: F401  (imports register the families)
    annotation_models,
    classifier,
    efficientnet_models,
    mammoclip,
    openclip_models,
    phantom_clip,
    python_models,
    timm_models,
    torchvision_models,
)
from mammodissect.models.base import Dissector, Preprocess, Target, describe_preprocess
from mammodissect.models.imagenet import imagenet_classes
from mammodissect.models.preprocess import ImagePreprocess, parse_image_size
from mammodissect.models.registry import load_dissector, load_target, schemes
from mammodissect.models.spec import ModelSpec, parse_spec
from mammodissect.models.weights import load_weights, read_state_dict

__all__ = [
    "Dissector",
    "ImagePreprocess",
    "ModelSpec",
    "Preprocess",
    "Target",
    "describe_preprocess",
    "imagenet_classes",
    "load_dissector",
    "load_target",
    "load_weights",
    "parse_image_size",
    "parse_spec",
    "read_state_dict",
    "schemes",
]
