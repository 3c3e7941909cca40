"""KFP component: the probe-eval step; the scores and report also become KFP Metrics/Markdown."""
from typing import NamedTuple

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


def probe_eval(params: str, data: Input[Dataset], model: Input[Model], ceiling_uri: str, root: str, image: str,
               scores: Output[Metrics], report: Output[Markdown]) -> NamedTuple("Outputs", [("eval_uri", str)]):
    """The temporal benchmark on frozen features, beside every baseline (`videossl.steps.probe_eval`).

    Args:
        params: The probe-eval step's share of the params (the split-params task's output).
        data: The dataset (the ingest task's output).
        model: The checkpoints (the pretrain task's output).
        ceiling_uri: The held-out tasks' supervised ceiling (the ceiling task's output).
        root: Where the run's data and outputs go (cluster.root).
        image: The image the tasks run in (cluster.image, compiled in): part of the output's address.

    Returns:
        eval_uri: The evaluation's location (scores.json, metrics.json, report.md, plots/).
        scores: The scores as KFP metrics (the full table is eval_uri/scores.json).
        report: report.md with its plots inlined (the KFP UI cannot follow relative links).
    """
    from collections import namedtuple
    from pathlib import Path

    from videossl.artifact_locations import location
    from videossl.data.versioning import output_uri
    from videossl.eval.report import inline_images
    from videossl.eval.scores import REPORT, flatten
    from videossl.step_params import parse_step_params
    from videossl.steps.probe_eval import probe_eval as step
    from videossl.storage import staged

    cfg = parse_step_params(params, "probe_eval")
    data_uri, model_uri = location(data), location(model)
    out_uri = output_uri(root, "probe_eval", params, image, data_uri, model_uri, ceiling_uri)
    with staged([data_uri, model_uri, ceiling_uri], out_uri) as ([data_dir, model_dir, ceiling_dir], out):
        flat = step(cfg, data_dir, model_dir, out, ceiling_dir=ceiling_dir)
        Path(report.path).write_text(inline_images((out / REPORT).read_text(), out))
    tasks = {task: scores for task, scores in flat.items() if isinstance(scores, dict) and "n_test" in scores}
    for key, value in flatten(tasks).items():
        scores.log_metric(key, value)
    return namedtuple("Outputs", ["eval_uri"])(out_uri)
