"""KFP component: the pretrain step (torchrun; writes encoder.pt + frame_encoder.pt at `out_uri`)."""
from typing import NamedTuple

from kfp import dsl

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def pretrain(params: str, data_uri: str, out_uri: str) -> NamedTuple("Outputs", [("model_uri", str)]):
    """Run `videossl.steps.pretrain.pretrain`; returns the checkpoints' location."""
    from collections import namedtuple

    from videossl.config import parse_config
    from videossl.steps.pretrain import pretrain as step

    step(parse_config(params), data_uri, out_uri)
    return namedtuple("Outputs", ["model_uri"])(out_uri)
