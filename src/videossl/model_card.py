"""The model card of a registered version (markdown): its benchmark, gate decision, provenance, params,
intended use and limits. Written from the scores and the gate's decision; registry.py stores it."""
from __future__ import annotations

from videossl.eval.scores import CI_HIGH, CI_LOW, HEADLINE
from videossl.gate import GateDecision, fmt

INTENDED_USE = """\
- A frozen feature extractor for short clips. The logged model (`mlflow.pyfunc.load_model`, a
  `videossl.clip_embedder.ClipEmbedder` inside) takes decoded uint8
  frames `[B, T, H, W, 3]` at the training clip length, frame rate and size, normalises them as
  training did (RGB in [0, 1], per-channel mean 0.45 and std 0.225) and returns the embedding the
  benchmark reads: tokens pooled over space, time slices concatenated in order (`[B, T' x D]`), so a
  clip and its reverse embed differently. A mean over all tokens would discard the order of time.
- `videossl embed --model models:/<name>@champion VIDEO...` (or `videossl.embed.load_encoder`)
  decodes and preprocesses any video exactly as training did; it reads the logged checkpoint
  `checkpoint/encoder.pt`, which loads without unpickling code.
- To be read out by light probes for temporal properties: arrow of time, playback speed, gravity
  direction, frame order.
- A research baseline for video-native self-supervised pretraining, compared side by side with a
  bag-of-frames encoder of the same size trained on the same data."""

LIMITS = """\
- Trained on a small corpus (largely the built-in synthetic physics world plus a few real clips) at
  low resolution and a fixed clip length and frame rate; features outside that regime are untested.
- Scores come from linear probes on frozen features with train/test split by source video. A task
  only measures temporal understanding where the bag-of-frames column stays near chance: a high
  bag-of-frames score means the task leaks through single frames.
- Real H.264 footage carries codec shortcuts (quality patterns inside a group of pictures): an
  arrow-of-time score on real video is only meaningful together with its controls.
- Not evaluated for any safety-relevant, surveillance or person-identifying use; do not deploy it
  for decisions about people.
- The logged model holds its weights as safetensors and its architecture as JSON: loading it
  unpickles nothing, and refuses weights whose sha256 differs from the one this registration
  recorded (the run's `encoder_sha256` param). Its code (the `videossl` package, in the model's
  `code` folder) runs when it loads, as any pyfunc's does: load models from a registry you trust."""


def _task_table(metrics: dict) -> str:
    """The benchmark's tables as the probe-eval report has them: the headline, then held-out tasks,
    trained-on diagnostics, content and controls (every model present, intervals when given)."""
    from videossl.eval.report import KIND_SECTIONS, headline_table, kind_table
    from videossl.eval.scores import MODELS

    tasks = {t: v for t, v in metrics.items() if isinstance(v, dict) and "n_test_videos" in v}
    if not tasks:
        return "(no task scores)"
    models = [m for m in MODELS if any(k.startswith(m) for v in tasks.values() for k in v)]
    parts = [headline_table({"tasks": tasks}, models)]
    parts += [f"**{title}**\n\n{table}" for kind, title, _ in KIND_SECTIONS
              if (table := kind_table({"tasks": tasks}, models, kind))]
    return "\n\n".join(p for p in parts if p)


def initialised_from(checkpoint: dict) -> str:
    """Where the encoder's training started, from its checkpoint's record (train/init_from.py)."""
    init = (checkpoint.get("result") or {}).get("init_from")
    if not init:
        return "a random draw (pretrain.init_from: null)"
    return f"`{init['from']}` ({init['kind']}, weights sha256 `{init['sha256'][:16]}`)"


def render_card(*, name: str, version: str | None, metrics: dict, decision: GateDecision,
                dataset_digest: str, git_commit: str, checkpoint: dict, params: dict[str, str],
                frame_encoder: str | None = None, run_id: str | None = None) -> str:
    """The model card (markdown) from the benchmark scores, provenance, params and the gate decision."""
    title = f"# Model card: {name}" + (f" v{version}" if version else "")
    lines = [title, "",
             "A self-supervised **video** encoder (video ViT, self-supervised pretraining), gated on "
             + ", ".join(f"`{m}`" for m in decision.policy.metrics) + ".", "",
             "## Benchmark (probes on frozen features, test split by source video)", "",
             "Test scores with 95% intervals; the video model's scores are also tags of this version.", "",
             _task_table(metrics)]
    if frame_encoder:
        lines += ["", f"The bag-of-frames column comes from the frame encoder (same ViT with T=1, mean-pooled "
                      f"over frames) in `{frame_encoder}`; it is a baseline and is not registered."]
    else:
        lines += ["", "No frame-encoder checkpoint was found beside the encoder: the bag-of-frames column "
                      "comes from the evaluation only."]
    p = decision.policy
    gate = ("**promoted to `champion`**" if decision.promote else "**not promoted** (`challenger` only)")
    lines += ["", "## Gate", "",
              f"{gate}. Every gate metric must beat the champion by at least {fmt(p.min_margin_over_champion)} "
              f"and its own bag-of-frames score by at least {fmt(p.min_margin_over_frames)} (a tie never passes)"
              + ("" if p.higher_is_better else "; lower is better") + ". Previous champion: "
              + (f"v{decision.champion_version}." if decision.champion_version else "none."), "",
              *[f"- `{c.metric}` {'pass' if c.passed else '**fail**'}: {c.reason}" for c in decision.checks],
              "", "## Provenance", "",
              f"- dataset digest: `{dataset_digest}`",
              f"- git commit: `{git_commit}`",
              f"- checkpoint: variant `{checkpoint.get('variant', 'video')}`, step {checkpoint.get('step', '?')}, "
              f"{checkpoint.get('num_frames', '?')} frames × {checkpoint.get('img_size', '?')} px"]
    lines.append(f"- initialised from: {initialised_from(checkpoint)}")
    if run_id:
        lines.append(f"- MLflow run: `{run_id}`")
    shown = {k: v for k, v in params.items() if k.split(".")[0] in ("seed", "model", "pretrain")
             or k in ("ingest.fps", "ingest.size", "ingest.clip_frames", "ingest.sources")}
    lines += ["", "## Params", "", "| key | value |", "|---|---|",
              *[f"| `{k}` | `{v}` |" for k, v in sorted(shown.items())],
              "", "All params are logged with the MLflow run.",
              "", "## Intended use", "", INTENDED_USE, "", "## Limits", "", LIMITS, ""]
    return "\n".join(lines)


def render_summary(*, name: str, version: str, metrics: dict, decision: GateDecision, run_id: str | None,
                   dataset_digest: str) -> str:
    """The version's description: what the registry page shows above the fold. A short summary that
    always fits MLflow's description column; the whole card is the run artifact `model_card.md`."""
    from videossl.eval.report import kind_table
    from videossl.eval.scores import MODELS
    from videossl.eval.tasks import HELD_OUT

    headline = metrics.get(HEADLINE) or {}
    tasks = {t: v for t, v in metrics.items() if isinstance(v, dict) and "n_test_videos" in v}
    shown = [m for m in MODELS if any(k.startswith(m) for v in tasks.values() for k in v)]
    lines = [f"**{name} v{version}**: a self-supervised video encoder, "
             + ("**champion**" if decision.promote else "challenger (not promoted)") + "."]
    if "video" in headline:
        lines.append(f"temporal_score {fmt(headline['video'])} [{fmt(headline.get('video' + CI_LOW))}, "
                     f"{fmt(headline.get('video' + CI_HIGH))}] (0 = the strongest baseline, 1 = supervised ceiling).")
    if tasks and (table := kind_table({"tasks": tasks}, shown, HELD_OUT)):
        lines += ["", table]
    lines += ["", f"Gate: {decision.reason}", "",
              f"Dataset `{dataset_digest[:12]}`" + (f", run `{run_id}`" if run_id else "")
              + ". The whole model card (benchmark of every task and baseline, provenance, params, intended use"
              " and limits) is the run artifact `model_card.md`."]
    return "\n".join(lines)
