"""KFP lightweight components, one per step, thin over videossl.steps.

The first task, split_params, validates the whole params and hands each step its share: the sections
it reads (`videossl.step_params`), so a task's cache key moves only with its own params. Each step's
component takes its share, the run's `root` and its inputs: datasets and models as `dsl.Dataset` /
`dsl.Model` artifacts that point at their folders (`videossl.artifact_locations`; the data never goes
into KFP's store). It computes its own output location (`videossl.data.versioning.output_uri`: a
folder under `root` addressed by its share of the params, the image and its inputs), calls the step
function on local folders (`videossl.storage.staged` brings s3:// inputs in and publishes the
output), and returns the output, so the DAG's edges are data dependencies and the UI shows lineage.
Small results (metrics, report, model card) are KFP Metrics/Markdown outputs the UI shows.

The functions are plain Python here; `make_components(image)` turns them into KFP components for one
image (`cluster.image`), at compile time. The image has `videossl` (and therefore kfp) installed,
which is why there is no `packages_to_install` and `install_kfp_package=False`.
"""
from kfp import dsl
from kfp.dsl.base_component import BaseComponent

from components.ceiling import ceiling
from components.ingest import ingest, ingest_merge, ingest_partition, plan_partitions
from components.pretrain import pretrain
from components.probe_eval import probe_eval
from components.register import register
from components.split_params import split_params

SPLIT = "split_params"  # the first task: the params, validated whole, split into each step's share
# a partitioned ingest's tasks (cluster.ingest_partitions): the plan, one task per partition, the merge
PLAN, PARTITION, MERGE = "plan_partitions", "ingest_partition", "ingest_merge"
FUNCTIONS = {SPLIT: split_params, "ingest": ingest, PLAN: plan_partitions, PARTITION: ingest_partition, MERGE: ingest_merge,
             "pretrain": pretrain, "ceiling": ceiling, "probe_eval": probe_eval, "register": register}


def make_components(image: str) -> dict[str, BaseComponent]:
    """The components, running in `image`. Only each function's source travels into the
    component, which is why every import lives inside the function bodies."""
    return {step: dsl.component(fn, base_image=image, install_kfp_package=False) for step, fn in FUNCTIONS.items()}
