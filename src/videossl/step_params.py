"""Each pipeline step's share of the params: the sections it reads (`STAGES[step].sections`), nothing else.

KFP keys a task's cache on its inputs, and the components address their output folders the same
way (`videossl.data.versioning.output_uri`). Handing every task the whole params would make a
register-only change re-ingest and retrain on the cluster; DVC scopes it to its stage. So the
pipeline's first task validates the whole params once and splits them (`split`), and each component
parses only its own share (`parse_step_params`). A section a step was not handed is not silently
replaced by its defaults: reading any of its keys raises, naming the step and the section, so a step
that starts reading a new section fails its first (local) run until `STAGES` says so.
"""
from __future__ import annotations

import json

from videossl.config import NOT_GIVEN, Config, ConfigError, Section, parse_config, validate_tree
from videossl.stages import STAGES


def step_text(cfg: Config, step: str) -> str:
    """`step`'s sections of `cfg` as one line of JSON (sorted keys: the same params, the same text)."""
    tree = cfg.model_dump(mode="json")
    return json.dumps({s: tree[s] for s in STAGES[step].sections}, sort_keys=True)


def split(params: str) -> dict[str, str]:
    """The whole params (YAML or JSON text), validated with every cross-section check, as one text per step."""
    cfg = parse_config(params)
    return {step: step_text(cfg, step) for step in STAGES}


def parse_step_params(text: str, step: str) -> Config:
    """The Config of `step`'s share: exactly its sections, validated; the others raise when read."""
    try:
        tree = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"the {step} step's params are not its share of the params (JSON): {e}") from None
    want = STAGES[step].sections
    if not isinstance(tree, dict) or set(tree) != set(want):
        got = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
        raise ConfigError(f"the {step} step takes params sections {sorted(want)}, got {got}: the pipeline was "
                          f"compiled by another videossl (compile it again)")
    absent = tuple(s for s in Config.model_fields if s not in want)
    cfg = validate_tree(tree, absent)
    for name in absent:
        value = getattr(cfg, name)
        if isinstance(value, Section):  # `seed` is a plain value: none of its own keys to guard
            # the frozen model is set around its own __setattr__, which would refuse
            object.__setattr__(cfg, name, _not_given(value, name, step))
    return cfg


_GUARDS: dict[tuple[type, str, str], type] = {}


def _not_given(section: Section, name: str, step: str) -> Section:
    """`section` (its defaults) as an instance whose keys raise when read; the Config's dump leaves it out."""
    cls = type(section)
    key = (cls, name, step)
    if key not in _GUARDS:
        fields = frozenset(cls.model_fields)
        message = (f"the {step} step read params section '{name}', which the pipeline does not hand it: "
                   f"add '{name}' to videossl.stages.STAGES['{step}'].reads")

        def __getattribute__(self, attr: str):
            if attr in fields:
                raise ConfigError(message)
            return object.__getattribute__(self, attr)

        _GUARDS[key] = type(f"{cls.__name__}NotGiven", (cls,), {"__getattribute__": __getattribute__,
                                                                 "__module__": __name__, NOT_GIVEN: True})
    return _GUARDS[key].model_construct(**dict(section))
