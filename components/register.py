"""KFP component: the register step; the model card also becomes a KFP Markdown output."""
from typing import NamedTuple

from kfp.dsl import Dataset, Input, Markdown, Model, Output


def register(params: str, data: Input[Dataset], model: Input[Model], eval_uri: str, root: str, image: str,
             model_card: Output[Markdown]) -> NamedTuple("Outputs", [("register_uri", str), ("model_version", str)]):
    """Register the encoder in the MLflow registry behind the champion/challenger gate (`videossl.steps.register`).

    Args:
        params: The register step's share of the params (all sections: its run logs every param).
        data: The dataset (the ingest task's output).
        model: The checkpoints (the pretrain task's output).
        eval_uri: The evaluation's location (the probe-eval task's output).
        root: Where the run's data and outputs go (cluster.root).
        image: The image the tasks run in (cluster.image, compiled in): part of the output's address.

    Returns:
        model_card: The version's model card.
        register_uri: The registration's location (registration.json, model_card.md).
        model_version: The registered model version.
    """
    from collections import namedtuple
    from pathlib import Path

    from videossl.artifact_locations import location
    from videossl.data.versioning import output_uri
    from videossl.stages import CARD
    from videossl.step_params import parse_step_params
    from videossl.steps.register import register as step
    from videossl.storage import staged

    cfg = parse_step_params(params, "register")
    data_uri, model_uri = location(data), location(model)
    out_uri = output_uri(root, "register", params, image, data_uri, model_uri, eval_uri)
    with staged([data_uri, model_uri, eval_uri], out_uri) as ([data_dir, model_dir, eval_dir], out):
        result = step(cfg, data_dir, model_dir, eval_dir, out)
        Path(model_card.path).write_text((out / CARD).read_text())
    return namedtuple("Outputs", ["register_uri", "model_version"])(out_uri, str(result["version"]))
