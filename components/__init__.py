"""KFP lightweight components, one per step, thin over videossl.steps.

Each component takes the params YAML text, the run's `root` and the locations (URIs/paths, never the
data) of its inputs, computes its own output location (`videossl.data.versioning.output_uri`: a
params-addressed folder under `root`), calls the step function on local folders
(`videossl.storage.staged` brings s3:// inputs in and publishes the output), and returns the output
location, so the DAG's edges are data dependencies. Small results (metrics, report, model card) are
KFP Metrics/Markdown outputs the UI shows.

The functions are plain Python here; `make_components(image)` turns them into KFP components for one
image (`cluster.image`), at compile time. The image has `videossl` (and therefore kfp) installed,
which is why there is no `packages_to_install` and `install_kfp_package=False`.
"""
from kfp import dsl
from kfp.dsl.base_component import BaseComponent

from components.ingest import ingest
from components.pretrain import pretrain
from components.probe_eval import probe_eval
from components.register import register

FUNCTIONS = {"ingest": ingest, "pretrain": pretrain, "probe_eval": probe_eval, "register": register}


def make_components(image: str) -> dict[str, BaseComponent]:
    """The four components, running in `image`. Only each function's source travels into the
    component, which is why every import lives inside the function bodies."""
    return {step: dsl.component(fn, base_image=image, install_kfp_package=False) for step, fn in FUNCTIONS.items()}
