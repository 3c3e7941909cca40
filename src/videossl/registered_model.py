"""The registered model as MLflow stores it: weights in safetensors, the architecture in JSON, and a
pyfunc loader (`loader_module`) that builds the module from them. Nothing is unpickled when it loads.

`register` writes the folder (`write`) and logs it with `mlflow.pyfunc.log_model(loader_module=
"videossl.registered_model")`; `mlflow.pyfunc.load_model('models:/videossl-encoder/1')` then calls
`_load_pyfunc`, which rebuilds the ViT from `model.json`, reads `weights.safetensors` (a format of raw
tensors and a JSON header: it cannot hold code) and refuses weights whose digest is not the one
recorded at registration: the run's `encoder_sha256` param, which MLflow never lets anyone change.

The code the model needs (videossl) travels in the model's `code` folder, as MLflow's code_paths do
for every pyfunc: whoever can write the artifact store can change it, as they could change any
Python package an environment installs. What this module guarantees is that the weights are the
registered ones and that loading them runs nothing from the weights' files.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from videossl.errors import StepError

FORMAT = "videossl.registered_model/1"
WEIGHTS = "weights.safetensors"
SPEC = "model.json"
DIGEST_PARAM = "encoder_sha256"  # the register run's param: the weights' digest, immutable once logged
SCORES_DIGEST_PARAM = "scores_sha256"  # and the digest of the scores.json it registered: both name the model


class TamperedModel(StepError):
    """The weights are not the ones that were registered."""


def write(encoder, meta: dict, folder: str | Path) -> str:
    """The model folder: safetensors weights and a JSON spec (shape, digest, preprocessing). Returns
    the weights' digest (models.checkpoint.state_digest, the one probe-eval records)."""
    from safetensors.torch import save_file

    from videossl.models.digest import state_digest

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    digest = state_digest(state)
    save_file(state, folder / WEIGHTS)
    spec = {"format": FORMAT, "shape": encoder.shape.as_dict(), "weights_sha256": digest,
            "preprocessing": (meta.get("config") or {}).get("ingest", {}), "step": meta.get("step")}
    (folder / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return digest


def read(folder: str | Path, registered: str | None = None):
    """The ClipEmbedder of a model folder (eval mode). Refuses weights whose digest differs from the
    folder's own record, or from `registered` (the registration's) when given, naming both digests."""
    from safetensors.torch import load_file

    from videossl.clip_embedder import ClipEmbedder
    from videossl.models.digest import state_digest
    from videossl.models.vit import VideoViT, VitShape

    folder = Path(folder)
    spec = json.loads((folder / SPEC).read_text())
    if spec.get("format") != FORMAT:
        raise StepError(f"{folder / SPEC} is not a videossl registered model (format {FORMAT} expected)")
    state = load_file(folder / WEIGHTS)
    actual = state_digest(state)
    for source, expected in (("the registration record", registered), (str(folder / SPEC), spec["weights_sha256"])):
        if expected is not None and expected != actual:
            raise TamperedModel(f"{folder / WEIGHTS} holds weights sha256 {actual}, but {source} says {expected}: "
                                "these are not the registered weights; refusing to load them")
    encoder = VideoViT(VitShape(**spec["shape"]))
    encoder.load_state_dict(state)
    return ClipEmbedder(encoder.eval()).eval()


def registered_digest(run_id: str, client=None) -> str:
    """The weights' digest the registration recorded (its run's param); StepError when it has none."""
    from mlflow import MlflowClient

    params = (client or MlflowClient()).get_run(run_id).data.params
    if DIGEST_PARAM not in params:
        raise TamperedModel(f"run {run_id} records no '{DIGEST_PARAM}': its weights cannot be checked; "
                            "register the model again with this version of videossl")
    return params[DIGEST_PARAM]


def _run_id(data_path: Path) -> str | None:
    """The run that logged the model whose data folder is `data_path` (MLflow keeps it in `data/<folder>`
    beside the model's MLmodel file); None for a folder saved outside a run."""
    from mlflow.models import Model

    mlmodel = next((d / "MLmodel" for d in data_path.parents[:2] if (d / "MLmodel").is_file()), None)
    return Model.load(str(mlmodel)).run_id if mlmodel is not None else None


class _Pyfunc:
    """What `mlflow.pyfunc.load_model` returns the predictions of: uint8 clips in, float32 vectors out."""

    def __init__(self, model):
        self.model = model

    def predict(self, model_input, params=None):
        import numpy as np
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.ascontiguousarray(model_input))).numpy().astype(np.float32)


def _load_pyfunc(data_path: str):
    """MLflow's entry point (pyfunc `loader_module`): check the weights against the registration
    record when the tracking server can be asked, against the folder's own record otherwise."""
    data_path = Path(data_path)
    run_id = _run_id(data_path)
    registered = None
    if run_id is not None:
        try:
            registered = registered_digest(run_id)
        except TamperedModel:
            raise
        except Exception as e:  # no tracking server here: the folder's own digest is all there is
            warnings.warn(f"videossl: could not read the registration record of run {run_id} ({type(e).__name__}); "
                          f"the weights are checked against {SPEC} only", stacklevel=2)
    return _Pyfunc(read(data_path, registered))
