"""KFP lightweight components, one per step, thin over videossl.steps.

Each component takes the params YAML text, the locations (URIs/paths, never the data) of its
inputs and `out_uri`, calls the step function, and returns its output location, so the DAG's
edges are data dependencies. Small results (metrics, report, model card) are KFP Metrics/Markdown
outputs the UI shows.
"""

# The image every component runs in: it has `videossl` (and therefore kfp) installed, which is
# why the components use `install_kfp_package=False` and no `packages_to_install`.
# A later issue takes it from params; keep it the one place that names the image.
DEFAULT_IMAGE = "ghcr.io/videossl/pipeline:0.1.0"
