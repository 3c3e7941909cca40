"""KFP component: the register step; the model card also becomes a KFP Markdown output."""
from typing import NamedTuple

from kfp.dsl import Markdown, Output


def register(params: str, data_uri: str, model_uri: str, eval_uri: str, root: str,
             model_card: Output[Markdown]) -> NamedTuple("Outputs", [("register_uri", str), ("model_version", str)]):
    """Register the encoder in the MLflow registry behind the champion/challenger gate (`videossl.steps.register`).

    Args:
        params: The params every step validates.
        data_uri: The dataset's location (the ingest task's output).
        model_uri: The checkpoints' location (the pretrain task's output).
        eval_uri: The evaluation's location (the probe-eval task's output).
        root: Where the run's data and outputs go (cluster.root).

    Returns:
        model_card: The version's model card.
        register_uri: The registration's location (registration.json, model_card.md).
        model_version: The registered model version.
    """
    from collections import namedtuple
    from pathlib import Path

    from videossl.config import dump_config, parse_config
    from videossl.data.versioning import output_uri
    from videossl.stages import CARD
    from videossl.steps.register import register as step
    from videossl.storage import staged

    cfg = parse_config(params)
    out_uri = output_uri(root, "register", dump_config(cfg), data_uri, model_uri, eval_uri)
    with staged([data_uri, model_uri, eval_uri], out_uri) as ([data, model, ev], out):
        result = step(cfg, data, model, ev, out)
        Path(model_card.path).write_text((out / CARD).read_text())
    return namedtuple("Outputs", ["register_uri", "model_version"])(out_uri, str(result["version"]))
