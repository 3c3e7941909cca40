"""KFP component: the register step; the model card also becomes a KFP Markdown output."""
from typing import NamedTuple

from kfp.dsl import Markdown, Output


def register(params: str, data_uri: str, model_uri: str, eval_uri: str, root: str,
             model_card: Output[Markdown]) -> NamedTuple("Outputs", [("register_uri", str), ("model_version", str)]):
    """Run `videossl.steps.register.register`; publish the model card, return the registration's
    location and the registered model version."""
    from collections import namedtuple
    from pathlib import Path

    from videossl.config import dump_config, parse_config
    from videossl.data.versioning import output_uri
    from videossl.steps.register import register as step
    from videossl.storage import staged

    cfg = parse_config(params)
    out_uri = output_uri(root, "register", dump_config(cfg), data_uri, model_uri, eval_uri)
    with staged([data_uri, model_uri, eval_uri], out_uri) as ([data, model, ev], out):
        result = step(cfg, data, model, ev, out)
        Path(model_card.path).write_text((out / "model_card.md").read_text())
    return namedtuple("Outputs", ["register_uri", "model_version"])(out_uri, str(result["version"]))
