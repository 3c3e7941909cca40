"""KFP component: validate the whole params once, and hand each step only the sections it reads."""
from typing import NamedTuple


def split_params(params: str) -> NamedTuple("Outputs", [("ingest", str), ("pretrain", str), ("ceiling", str),
                                                         ("probe_eval", str), ("register", str)]):
    """The params, validated with every cross-section check, split into one share per step (`videossl.step_params`).

    A task's cache key and output folder depend on its inputs: with only its own sections among them,
    a change to one step's params reruns that step and what follows it, as `dvc repro` does.

    Args:
        params: The params every step validates (params.yaml as YAML or one line of JSON).

    Returns:
        ingest: The ingest step's sections, as one line of JSON.
        pretrain: The pretrain step's sections.
        ceiling: The ceiling step's sections.
        probe_eval: The probe-eval step's sections.
        register: The register step's sections (all of them: its run logs every param).
    """
    from collections import namedtuple

    from videossl.step_params import split

    shares = split(params)
    names = ["ingest", "pretrain", "ceiling", "probe_eval", "register"]
    return namedtuple("Outputs", names)(*(shares[n] for n in names))
