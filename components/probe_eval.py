"""KFP component: the probe-eval step; the scores and report also become KFP Metrics/Markdown."""
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def probe_eval(params: str, data_uri: str, model_uri: str, out_uri: str, scores: Output[Metrics],
               report: Output[Markdown]) -> NamedTuple("Outputs", [("eval_uri", str)]):
    """Run `videossl.steps.probe_eval.probe_eval`; log every numeric score (`arrow_of_time.video`, ...)
    as a KFP metric, publish report.md as Markdown, and return the eval location."""
    from collections import namedtuple
    from pathlib import Path

    from videossl.config import parse_config
    from videossl.registry import flatten_scores
    from videossl.steps.probe_eval import probe_eval as step

    cfg = parse_config(params)
    flat = step(cfg, data_uri, model_uri, out_uri)
    for key, value in flatten_scores({task: flat[task] for task in cfg.probe_eval.tasks}).items():
        scores.log_metric(key, value)
    Path(report.path).write_text((Path(out_uri) / "report.md").read_text())
    return namedtuple("Outputs", ["eval_uri"])(out_uri)
