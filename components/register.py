"""KFP component: the register step; the model card also becomes a KFP Markdown output."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register(params: str, data_uri: str, model_uri: str, eval_uri: str, out_uri: str,
             model_card: Output[Markdown]) -> NamedTuple("Outputs", [("register_uri", str), ("model_version", str)]):
    """Run `videossl.steps.register.register`; publish the model card, return the registration's
    location and the registered model version."""
    from collections import namedtuple
    from pathlib import Path

    from videossl.config import parse_config
    from videossl.steps.register import register as step

    result = step(parse_config(params), data_uri, model_uri, eval_uri, out_uri)
    Path(model_card.path).write_text((Path(out_uri) / "model_card.md").read_text())
    return namedtuple("Outputs", ["register_uri", "model_version"])(out_uri, str(result["version"]))
