"""Benchmark outputs: markdown tables, PNG plots, the DVC plot data, and the console table, all
read from the scores' record (its key scheme: videossl.eval.scores).
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from videossl.eval.scores import (BASELINES, CHOSEN, CI_HIGH, CI_LOW, HEADLINE, HEADS, MODEL_LABELS,
                                  HELD_FRAME, PER_CLASS, STRONGEST, SUPERVISED, SURPRISE, TOP, TOP_K, VIDEO, gap, interval)
from videossl.eval.tasks import CLASSIFICATION, CONTENT, CONTROL, DIAGNOSTIC, HELD_OUT, TASKS

PROBE_ABBREVIATIONS = {"linear": "lin", "attentive": "att", "knn": "knn"}
KIND_SECTIONS = ((HELD_OUT, "Held-out tasks (the headline)",
                  "No pretraining objective sees these labels. The video model is read with the probe chosen on "
                  "validation videos; every baseline with its strongest probe on the test videos (the bar to clear); "
                  "the gap is paired against the strongest baseline. Where the objective predicts (mae, jepa), "
                  "`surprise` is its predictor on the matched sets with no probe: right when the possible members "
                  "surprise it less; beside it the same reading of the last seen frame held, a predictor that "
                  "learned nothing, which the objective's surprise must beat to mean anything."),
                 (DIAGNOSTIC, "Trained-on diagnostics",
                  "Labels a pretext objective trains on (reversal, playback speed, shuffling): a probe here re-reads "
                  "what the objective learnt to output. `heads` is the objective's own heads on the same test "
                  "clips, zero-shot (no probe)."),
                 (CONTENT, "Content controls", "Appearance, not time: what temporal training keeps of content."),
                 (CLASSIFICATION, "Classification (your labelled videos)",
                  "The labelled list's classes, every model read by the same probes: top-1 accuracy per test "
                  "video, a video's class the one its clips' mean score ranks first (several views of each "
                  "video, as V-JEPA and VideoMAE score), intervals resampling test videos; the gap is to the "
                  "strongest baseline. Top-5 below where there are more than five classes. Per class below: "
                  "each class's test videos and the linear probe's recall."),
                 (CONTROL, "Controls (every model must be at chance)",
                  "Questions the videos cannot answer: a model above chance here reads something other than physics."))


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(scores: dict, key: str, probe: bool = False) -> str:
    if not _is_num(scores.get(key)):
        return "—"
    tag = ""
    if probe and isinstance(scores.get(key + "_probe"), str):
        tag = f" ({PROBE_ABBREVIATIONS.get(scores[key + '_probe'], scores[key + '_probe'])})"
    if not (ci := interval(scores, key)):
        return f"{scores[key]:.3f}{tag}"
    return f"{scores[key]:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]{tag}"


def _gap(scores: dict, a: str, b: str) -> str:
    paired = gap(a, b)
    if _is_num(scores.get(paired)):
        ci = interval(scores, paired)
        return f"{scores[paired]:+.3f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{scores[paired]:+.3f}"
    if _is_num(scores.get(a)) and _is_num(scores.get(b)):
        return f"{scores[a] - scores[b]:+.3f}"
    return "—"


def _n(scores: dict, suffix: str = "") -> str:
    n = scores.get("n_test_determinable" if suffix == "_determinable" else "n_test")
    if not _is_num(n):
        return "—"
    videos = scores.get("n_test_videos")
    return f"{n} ({videos} videos)" if _is_num(videos) else str(n)


def _chance(scores: dict) -> str:
    if not _is_num(scores.get("chance")):
        return "—"
    if _is_num(scores.get("null_low")):
        return f"{scores['chance']:.3f} [{scores['null_low']:.2f}, {scores['null_high']:.2f}]"
    return f"{scores['chance']:.3f}"


def strongest_baseline(scores: dict, models: list[str]) -> str | None:
    """The baseline whose strongest probe scored highest on this task."""
    options = [m for m in models if m in BASELINES and _is_num(scores.get(m + STRONGEST))]
    return max(options, key=lambda m: scores[m + STRONGEST]) if options else None


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def kind_table(metrics: dict, models: list[str], kind: str) -> str:
    """The tasks of one kind: the ceiling, the subject (`models[0]`, the video model: probe chosen on
    validation; the linear probe and the objective's heads for diagnostics), every baseline with its
    strongest probe, the paired gap to the strongest baseline, n and chance."""
    tasks = {t: s for t, s in metrics["tasks"].items() if t in TASKS and TASKS[t].kind == kind}
    if not tasks:
        return ""
    subject = models[0]
    lead = subject if kind == DIAGNOSTIC else subject + CHOSEN  # the subject's score the gap is taken from
    video_cols = [(subject, f"{model_label(subject)} (linear)"), (subject + HEADS, "objective's heads, zero-shot")] \
        if kind == DIAGNOSTIC else [(lead, model_label(subject))]
    if any(subject + SURPRISE in s for s in tasks.values()):  # an objective that predicts, read with no probe
        video_cols += [(subject + SURPRISE, f"{model_label(subject)}'s surprise, zero-shot"),
                       (HELD_FRAME + SURPRISE, "last frame held's surprise (no learning)")]
    others = [m for m in models[1:] if m not in BASELINES]  # other encoders: their chosen probe
    base = [m for m in models if m in BASELINES]
    ceiling = any(_is_num(s.get(SUPERVISED)) for s in tasks.values())
    head = (["task"] + (["supervised ceiling"] if ceiling else []) + [name for _, name in video_cols]
            + [model_label(m) for m in others] + [model_label(m) for m in base]
            + [f"{model_label(subject)} − strongest baseline (paired)", "n test (videos)", "chance [null 95%]"])
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for task, s in tasks.items():
        b = strongest_baseline(s, base)
        gap_cell = _gap(s, lead, b + STRONGEST) if b else "—"
        cells = ([task] + ([_cell(s, SUPERVISED)] if ceiling else []) + [_cell(s, k, probe=True) for k, _ in video_cols]
                 + [_cell(s, m + CHOSEN, probe=True) for m in others] + [_cell(s, m + STRONGEST, probe=True) for m in base]
                 + [gap_cell + (f" vs {MODEL_LABELS[b]}" if gap_cell != "—" else ""), _n(s), _chance(s)])
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def markdown_table(metrics: dict, models: list[str], suffix: str = "", gaps: bool = False) -> str:
    """Every task with a score for probe `suffix`: each model's test score with its 95% interval, n and chance."""
    head = "| task | " + " | ".join(model_label(m) for m in models) + " | n test | chance |"
    rows = [head, "|---" * (len(models) + 3) + "|"]
    for task, s in metrics["tasks"].items():
        if f"{models[0]}{suffix}" not in s:
            continue
        rows.append(f"| {task} | " + " | ".join(_cell(s, m + suffix) for m in models) + f" | {_n(s, suffix)} | {_chance(s)} |")
    return "\n".join(rows)


def headline_table(metrics: dict, models: list[str]) -> str:
    """temporal_score per model and per task: 0 = the strongest baseline, 1 = the supervised ceiling."""
    s = metrics["tasks"].get(HEADLINE)
    if not s:
        return ""
    rows = ["| model | temporal score [95% CI] |", "|---|---|"]
    for m in models:
        if _is_num(s.get(m)):
            rows.append(f"| {model_label(m)} | {_cell(s, m)} |")
    per_task = [t for t in s.get("tasks", "").split(",") if _is_num(s.get(t))]
    if per_task:
        rows += ["", f"| held-out task | {model_label(models[0])}'s share of the headroom | strongest baseline (probe) |",
                 "|---|---|---|"]
        bars = dict(kv.split("=", 1) for kv in s.get("baselines", "").split(",") if "=" in kv)
        rows += [f"| {t} | {s[t]:+.3f} | {bars.get(t, '—')} |" for t in per_task]
    return "\n".join(rows)


def console_table(metrics: dict, models: list[str]) -> str:
    """The terminal's table: per task the ceiling, the video model's chosen probe and each baseline's strongest."""
    names = ["supervised"] + [model_label(m) for m in models]
    tasks = metrics["tasks"]
    width = max(len(t) for t in tasks) + 2
    lines = ["task".ljust(width) + "".join(n.rjust(16) for n in names) + "   n test (videos)"]
    for task, s in tasks.items():
        def value(m: str):
            for key in ([m] if task == HEADLINE else [m + CHOSEN if m not in BASELINES else m + STRONGEST, m]):
                if _is_num(s.get(key)):
                    return s[key]
            return None
        cols = [s.get(SUPERVISED)] + [value(m) for m in models]
        lines.append(task.ljust(width) + "".join(f"{v:16.3f}" if _is_num(v) else "—".rjust(16) for v in cols)
                     + f"   {_n(s)}")
    return "\n".join(lines)


def task_plot_rows(metrics: dict, models: list[str]) -> dict[str, list[dict]]:
    """DVC plot data, one plot per task (`plots/tasks/<task>.json`, the headline `temporal_score` among
    them): a bar per model (the video model's chosen probe, each baseline's strongest) with its 95%
    interval, the supervised ceiling first where the task has one."""
    out = {}
    for task, s in metrics["tasks"].items():
        keys = [(SUPERVISED, "supervised ceiling")] + [
            (m if task == HEADLINE else m + (STRONGEST if m in BASELINES else CHOSEN), model_label(m)) for m in models]
        rows = [{"model": label, "score": s[k], "ci_low": s.get(k + CI_LOW), "ci_high": s.get(k + CI_HIGH)}
                for k, label in keys if _is_num(s.get(k))]
        if rows:
            out[task] = rows
    return out


def confusion_rows(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> list[dict]:
    """DVC's confusion template's data: one row per test clip, its true and its predicted class."""
    return [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(labels.tolist(), predicted.tolist())]


PROBE_SECTIONS = (("", "Linear probe on time-ordered features"), ("_attentive", "Attentive probe"),
                  ("_knn", "kNN (cosine)"),
                  (CHOSEN + TOP, f"Top-{TOP_K} accuracy (probe chosen on validation; tasks with more than {TOP_K} classes)"),
                  ("_chosen_determinable", "Arrow of time on the clips whose direction is physically determinable "
                                           "(probe chosen on validation)"),
                  ("_no_control", "Real-video arrow of time WITHOUT the codec control (the shortcut left in)"))
# Words for metrics.json keys the tables do not show
KEY_NOTES = {"_still": "share of real test clips whose features equal their reversed twin's (the codec control "
                       "froze a still scene): such clips count half right in each direction"}


def markdown_report(metrics: dict, models: list[str], digest: str, n_clips: int, confusion: bool) -> str:
    embedded = (f"{n_clips} benchmark clips embedded per model" if n_clips else
                "real footage only (no synthetic benchmark task)")
    sections = [f"# Temporal-understanding benchmark\n\nDataset `{digest[:12]}`, {embedded}. Scores on held-out "
                f"videos; every interval is a 95% interval from resampling test videos (clips of one video are not "
                f"independent), and the gap columns are paired (both models on the same resampled videos). `chance` "
                f"is the mean of the task's null (training labels permuted by video), with its 95% range: a score "
                f"inside that range is indistinguishable from a model with nothing to say. Matched tasks score one "
                f"comparison per set (possible members above impossible ones; a tie counts half).\n"]
    if models and models[0] != VIDEO:  # an external encoder evaluated alone (eval/external.subject_baselines)
        sections.append(f"No videossl model was evaluated: the subject is `{models[0]}`. Its bag of frames and ordered "
                        f"frames are `{models[0]}` itself on each frame alone (the frame repeated into a still clip), "
                        f"and random init is its own architecture re-initialised; raw pixels and motion statistics "
                        f"are as always.")
    verdict = conclusion(metrics, models)
    if verdict:
        sections.append("## Conclusion\n\n" + verdict)
    head = headline_table(metrics, models)
    if head:
        s = metrics["tasks"][HEADLINE]
        unscaled = s.get("unscaled", "")
        sections.append("## Headline: temporal score\n\nThe mean over the held-out tasks (" + s.get("tasks", "")
                        + ") of (model − strongest baseline) / (supervised ceiling − strongest baseline): 0 is the "
                        "best any baseline reached with any probe, 1 the ceiling."
                        + (f" Not averaged, their supervised ceiling below {s.get('headline_ceiling')} on validation videos "
                           f"(what their labels allow is not known yet): {unscaled.replace('=', ' ')}." if unscaled else "")
                        + "\n\n" + head)
    for kind, title, text in KIND_SECTIONS:
        table = kind_table(metrics, models, kind)
        if table:
            sections.append(f"## {title}\n\n{text}\n\n{table}")
        if kind == CLASSIFICATION:
            sections += [per_class_table(task, rows) for task, rows in metrics.get(PER_CLASS, {}).items()]
    sections.append("![benchmark](plots/benchmark.png)")
    for suffix, title in PROBE_SECTIONS:
        table = markdown_table(metrics, models, suffix)
        if table.count("\n") > 1:
            sections.append(f"## {title}\n\n{table}")
    if metrics.get("footage"):
        sections.append(footage_section(metrics, models))
    if confusion:
        sections.append("## Confusion matrices (linear probe, test videos)\n\n![confusion](plots/confusion.png)")
    for task in metrics["tasks"]:
        if task in TASKS:
            sections.append(f"**{task}** ({TASKS[task].kind.replace('_', '-')}): {TASKS[task].why}")
    return "\n\n".join(sections) + "\n"


def per_class_table(task: str, rows: dict[str, dict]) -> str:
    """One row per class of a classification task: its test videos and each model's recall."""
    models = [m for m in next(iter(rows.values()), {}) if m != "n"]
    head = f"**{task}, per class** (linear probe, recall on test videos)\n\n| class | test videos | " + \
        " | ".join(model_label(m) for m in models) + " |\n|" + "---|" * (len(models) + 2)
    body = [f"| {name} | {r['n']} | " + " | ".join(f"{r[m]:.3f}" for m in models) + " |" for name, r in rows.items()]
    return "\n".join([head, *body])


def conclusion(metrics: dict, models: list[str]) -> str:
    """What the numbers say, in words: the headline, and on which held-out tasks the subject (the video
    model) beats or loses to the strongest baseline (the paired gap's 95% interval above or below 0),
    and where neither can be said."""
    tasks = metrics["tasks"]
    held = [t for t in tasks if t in TASKS and TASKS[t].kind == HELD_OUT]
    if not held:
        return ""
    lines = []
    subject = models[0]
    head = tasks.get(HEADLINE)
    if head and subject in head:
        lines.append(f"The {model_label(subject)}'s temporal score is {_cell(head, subject)} (0 = the strongest baseline, "
                     f"1 = the supervised ceiling).")
    won, lost, level = [], [], []
    for t in held:
        b = strongest_baseline(tasks[t], models)
        key = gap(subject + CHOSEN, b + STRONGEST) if b else None
        if key is None or key + CI_LOW not in tasks[t]:
            continue
        (won if tasks[t][key + CI_LOW] > 0 else lost if tasks[t][key + CI_HIGH] < 0 else level).append(
            f"{t} (vs {MODEL_LABELS[b]})")
    lines += [f"Above the strongest baseline: {', '.join(won) or 'no task'}.",
              f"Below it: {', '.join(lost) or 'no task'}.",
              f"Not distinguishable from it: {', '.join(level) or 'no task'}."]
    return " ".join(lines[:1]) + "\n\n- " + "\n- ".join(lines[1:])


def footage_section(metrics: dict, models: list[str]) -> str:
    """The real videos used, and the real-video arrow of time per footage group (each group scored
    when held out), beside the pooled score above: clips of one video are not independent."""
    videos = metrics["footage"]
    lines = ["## Real footage\n", f"{len(videos)} real videos in {len({v['group'] for v in videos})} footage groups "
             f"({sum(v['seconds'] for v in videos):.1f} s). Each group is held out in turn; the score with the "
             "codec control is the primary one (the section without it shows what a compression shortcut would "
             "add).\n", "| video | group | frames | seconds |", "|---|---|---|---|"]
    lines += [f"| {v['video']} | {v['group']} | {v['frames']} | {v['seconds']:.1f} |" for v in videos]
    lines += ["", f"`<model>_still` in metrics.json: {KEY_NOTES['_still']}."]
    real = metrics["tasks"].get("real_arrow_of_time", {})
    n = real.get("n_test_videos")
    if _is_num(n):
        right = [f"{model_label(m)} {real[m + '_videos_right']} of {n}" for m in models
                 if _is_num(real.get(m + "_videos_right"))]
        lines += ["", f"Held-out real videos whose direction a model got right on most clips: {', '.join(right)}. "
                  f"With {n} videos this is a count, not an accuracy: a model at chance gets half of them right "
                  "on average."]
        lines += ["", "The video model was pretrained on these videos (pretrain.real_footage: true): its score says "
                  "less." if real.get("pretrained_on_these_videos") else
                  "No model was pretrained on these videos (pretrain.real_footage: false)."]
    groups = real.get("groups", {})
    if groups:
        shown = [m for m in models if any(m in g for g in groups.values())]
        lines += ["", "Real-video arrow of time per held-out group (linear probe, with the codec control):", "",
                  "| group | n test | " + " | ".join(model_label(m) for m in shown) + " |",
                  "|---|---|" + "---|" * len(shown)]
        lines += [f"| {g} | {row['n_test']} | " + " | ".join(f"{row[m]:.3f}" if m in row else "—" for m in shown)
                  + " |" for g, row in groups.items()]
    return "\n".join(lines)


_IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def inline_images(markdown: str, base: Path) -> str:
    """The report with each linked PNG embedded as a data URI, for viewers that only get the text
    (the KFP UI's Markdown output). Links to files that do not exist are left as they are."""
    def embed(m: re.Match) -> str:
        path = base / m.group(2)
        if not path.is_file():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"

    return _IMAGE_LINK.sub(embed, markdown)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(metrics: dict, models: list[str], dest: Path) -> Path:
    """Per task: the ceiling, the video model's chosen probe and each baseline's strongest probe with
    its 95% interval; dashed: chance."""
    plt = _pyplot()
    cols = [SUPERVISED] + models
    tasks = [t for t, s in metrics["tasks"].items() if t in TASKS and models[0] + CHOSEN in s]
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(1.8 + 1.5 * len(tasks), 3.8), dpi=120)
    for i, m in enumerate(cols):
        key = m if m == SUPERVISED else m + (STRONGEST if m in BASELINES else CHOSEN)
        s = [metrics["tasks"][t] for t in tasks]
        acc = np.array([x.get(key, np.nan) for x in s], dtype=float)
        lo = acc - np.array([x.get(key + CI_LOW, x.get(key, np.nan)) for x in s], dtype=float)
        hi = np.array([x.get(key + CI_HIGH, x.get(key, np.nan)) for x in s], dtype=float) - acc
        ax.bar(np.arange(len(tasks)) + (i - (len(cols) - 1) / 2) * width, acc, width,
               yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=2,
               label=MODEL_LABELS.get(m, "supervised ceiling" if m == SUPERVISED else m))
    for j, t in enumerate(tasks):
        ax.hlines(metrics["tasks"][t]["chance"], j - 0.45, j + 0.45, colors="k", linestyles="dashed", linewidth=1)
    ax.set_xticks(np.arange(len(tasks)), [t.replace("_", "\n") for t in tasks], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score (95% CI)")
    ax.set_title(f"{model_label(models[0])} (probe chosen on validation) and baselines (strongest probe); dashed: chance",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=4)
    fig.tight_layout()
    return _save(fig, dest)


def confusion_plot(confusions: dict[str, dict[str, np.ndarray]], classes: dict[str, list[str]], dest: Path) -> Path:
    """One row per task, one column per model: the primary probe's test confusion matrix (rows: truth)."""
    plt = _pyplot()
    tasks = list(confusions)
    models = list(next(iter(confusions.values()))) if tasks else []
    fig, axes = plt.subplots(len(tasks), len(models), figsize=(2.4 * len(models) + 0.8, 2.3 * len(tasks)), dpi=110,
                             squeeze=False, layout="constrained")
    for i, task in enumerate(tasks):
        for j, model in enumerate(models):
            ax, cm = axes[i][j], confusions[task][model]
            image = ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
            for (r, c), v in np.ndenumerate(cm):
                ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7)
            names = classes[task]
            ax.set_xticks(range(len(names)), names, fontsize=7, rotation=45)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.set_xlabel("predicted", fontsize=7)
            if i == 0:
                ax.set_title(model_label(model), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{task}\ntruth", fontsize=7)
    if tasks:
        bar = fig.colorbar(image, ax=axes, shrink=0.6, fraction=0.03)
        bar.set_label("share of each true class", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    return _save(fig, dest)


def _save(fig, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    _pyplot().close(fig)
    return dest
