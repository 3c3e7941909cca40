"""KFP component: the probe-eval step; the scores and report also become KFP Metrics/Markdown."""
from typing import NamedTuple

from kfp.dsl import Markdown, Metrics, Output


def probe_eval(params: str, data_uri: str, model_uri: str, root: str, scores: Output[Metrics],
               report: Output[Markdown]) -> NamedTuple("Outputs", [("eval_uri", str)]):
    """The temporal benchmark on frozen features, beside every baseline (`videossl.steps.probe_eval`).

    Args:
        params: The params every step validates.
        data_uri: The dataset's location (the ingest task's output).
        model_uri: The checkpoints' location (the pretrain task's output).
        root: Where the run's data and outputs go (cluster.root).

    Returns:
        eval_uri: The evaluation's location (scores.json, metrics.json, report.md, plots/).
        scores: The scores as KFP metrics (the full table is eval_uri/scores.json).
        report: report.md with its plots inlined (the KFP UI cannot follow relative links).
    """
    from collections import namedtuple
    from pathlib import Path

    from videossl.config import dump_config, parse_config
    from videossl.data.versioning import output_uri
    from videossl.eval.report import inline_images
    from videossl.eval.scores import REPORT, flatten
    from videossl.steps.probe_eval import probe_eval as step
    from videossl.storage import staged

    cfg = parse_config(params)
    out_uri = output_uri(root, "probe_eval", dump_config(cfg), data_uri, model_uri)
    with staged([data_uri, model_uri], out_uri) as ([data, model], out):
        flat = step(cfg, data, model, out)
        Path(report.path).write_text(inline_images((out / REPORT).read_text(), out))
    tasks = {task: scores for task, scores in flat.items() if isinstance(scores, dict) and "n_test" in scores}
    for key, value in flatten(tasks).items():
        scores.log_metric(key, value)
    return namedtuple("Outputs", ["eval_uri"])(out_uri)
