"""Benchmark outputs: markdown tables, PNG plots, the DVC plot data, and the console table, all
read from the scores' record (its key scheme: videossl.eval.scores).
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from videossl.eval.scores import CI_HIGH, CI_LOW, HEADLINE, SUPERVISED, VIDEO, gap, interval

MODEL_LABELS = {"video": "video model", "frames": "bag of frames", "ordered_frames": "ordered frames",
                "random_init": "random init", "pixels": "raw pixels"}
MODELS = list(MODEL_LABELS)  # the model, its bag-of-frames baseline, and the other baselines
BASELINES = MODELS[1:]
# The chance level of a table, where it is not the task's own `chance` key
CHANCE_KEYS = {"_r5": "chance_r5", "_predictor": "chance", "_predictor_r5": "chance_r5",
               "_within_video": "within_video_chance"}


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(scores: dict, key: str) -> str:
    if not _is_num(scores.get(key)):
        return "—"
    if not (ci := interval(scores, key)):
        return f"{scores[key]:.3f}"
    return f"{scores[key]:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _gap(scores: dict, a: str, b: str) -> str:
    paired = gap(a, b)
    if _is_num(scores.get(paired)):
        ci = interval(scores, paired)
        return f"{scores[paired]:+.3f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{scores[paired]:+.3f}"
    if _is_num(scores.get(a)) and _is_num(scores.get(b)):
        return f"{scores[a] - scores[b]:+.3f}"
    return "—"


def _n(scores: dict, suffix: str) -> str:
    n = scores.get("n_test_determinable" if suffix == "_determinable" else "n_test")
    if not _is_num(n):
        return "—"
    videos = scores.get("n_test_videos")
    return f"{n} ({videos} videos)" if _is_num(videos) else str(n)


def _chance(scores: dict, suffix: str) -> str:
    key = CHANCE_KEYS.get(suffix, "chance")
    if not _is_num(scores.get(key)):
        return "—"
    if key == "chance" and _is_num(scores.get("null_low")):
        return f"{scores[key]:.3f} [{scores['null_low']:.2f}, {scores['null_high']:.2f}]"
    return f"{scores[key]:.3f}"


def markdown_table(metrics: dict, models: list[str], suffix: str = "", gaps: bool = True) -> str:
    """Every task: the supervised ceiling, each model's test score with its 95% interval (for the probe
    `suffix`), the video model's paired gap to each baseline, n and chance (the null's mean and range)."""
    base = [m for m in models if m != "video"] if gaps else []
    ceiling = suffix in ("", "_determinable") and any(_is_num(s.get(SUPERVISED + suffix))
                                                       for s in metrics["tasks"].values())
    cols = ([SUPERVISED] if ceiling else []) + models
    head = ("| task | " + " | ".join(MODEL_LABELS.get(m, m) for m in cols) + " | "
            + "".join(f"video − {MODEL_LABELS.get(b, b)} | " for b in base) + "n test | chance |")
    rows = [head, "|---" * (len(cols) + len(base) + 3) + "|"]
    for task, s in metrics["tasks"].items():
        if f"video{suffix}" not in s:
            continue
        rows.append(f"| {task} | " + " | ".join(_cell(s, m + suffix) for m in cols) + " | "
                    + "".join(f"{_gap(s, 'video' + suffix, b + suffix)} | " for b in base)
                    + f"{_n(s, suffix)} | {_chance(s, suffix)} |")
    return "\n".join(rows)


def headline_table(metrics: dict, models: list[str]) -> str:
    """temporal_score per model: 0 = the bag of frames, 1 = the supervised ceiling."""
    s = metrics["tasks"].get(HEADLINE)
    if not s:
        return ""
    rows = ["| model | temporal score [95% CI] |", "|---|---|"]
    for m in [SUPERVISED] + models:
        if _is_num(s.get(m)):
            rows.append(f"| {MODEL_LABELS.get(m, 'supervised ceiling' if m == SUPERVISED else m)} | {_cell(s, m)} |")
    return "\n".join(rows)


def console_table(metrics: dict, models: list[str]) -> str:
    cols = [SUPERVISED] + models
    names = ["supervised"] + [MODEL_LABELS.get(m, m) for m in models]
    width = max(len(t) for t in metrics["tasks"]) + 2
    lines = ["task".ljust(width) + "".join(n.rjust(15) for n in names) + "   n test (videos)"]
    for task, s in metrics["tasks"].items():
        lines.append(task.ljust(width) + "".join(f"{s[m]:15.3f}" if _is_num(s.get(m)) else "—".rjust(15) for m in cols)
                     + f"   {_n(s, '')}")
    return "\n".join(lines)


def task_plot_rows(metrics: dict, models: list[str]) -> dict[str, list[dict]]:
    """DVC plot data, one plot per task (`plots/tasks/<task>.json`, the headline `temporal_score`
    among them): a bar per model with the primary probe's test score and its 95% interval, the
    supervised ceiling first where the task has one. `dvc plots diff` puts each revision's bar beside
    the other's."""
    out = {}
    for task, s in metrics["tasks"].items():
        rows = [{"model": MODEL_LABELS.get(m, "supervised ceiling" if m == SUPERVISED else m), "score": s[m],
                 "ci_low": s.get(m + CI_LOW), "ci_high": s.get(m + CI_HIGH)}
                for m in [SUPERVISED] + models if _is_num(s.get(m))]
        if rows:
            out[task] = rows
    return out


def confusion_rows(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> list[dict]:
    """DVC's confusion template's data: one row per test clip, its true and its predicted class."""
    return [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(labels.tolist(), predicted.tolist())]


REPORT_SECTIONS = (("_grid", "Linear probe on the 2x2 grid of each time slice (layout kept)"),
                   ("_attentive", "Attentive probe"), ("_knn", "kNN (cosine)"),
                   ("_determinable", "Arrow of time on the clips whose direction is physically determinable"),
                   ("_predictor", "Future-clip retrieval through a learned linear predictor (R@1)"),
                   ("_r5", "Retrieval R@5 (cosine)"),
                   ("_within_video", "Retrieval R@1 among the same video's future clips only (cosine)"),
                   ("_no_control", "Real-video arrow of time WITHOUT the codec control (the shortcut left in)"))
# Words for metrics.json keys the tables do not show
KEY_NOTES = {"_still": "share of real test clips whose features equal their reversed twin's (the codec control "
                       "froze a still scene): such clips count half right in each direction"}


def markdown_report(metrics: dict, models: list[str], digest: str, n_clips: int, confusion: bool,
                    time_vector: bool) -> str:
    embedded = (f"{n_clips} benchmark clips embedded per model" if n_clips else
                "real footage only (no synthetic benchmark task)")
    sections = [f"# Temporal-understanding benchmark\n\nDataset `{digest[:12]}`, {embedded}. Scores on held-out videos; every interval is a 95% interval from resampling test "
                f"videos (clips of one video are not independent), and the gap columns are paired (both models "
                f"on the same resampled videos). `chance` is the mean of the task's label-permutation null, with "
                f"its 95% range: a score inside that range is indistinguishable from a model with nothing to say.\n"]
    verdict = conclusion(metrics)
    if verdict:
        sections.append("## Conclusion\n\n" + verdict)
    head = headline_table(metrics, models)
    if head:
        s = metrics["tasks"][HEADLINE]
        sections.append("## Headline: temporal score\n\nThe mean over the temporal tasks (" + s.get("tasks", "")
                        + ") of (model − bag of frames) / (supervised ceiling − bag of frames): 0 is the bag of "
                        "frames, 1 the ceiling.\n\n" + head)
    sections += ["## Linear probe on time-ordered features (primary)\n\nEach clip's tokens pooled over space, "
                 "concatenated in time order. Primary because it is the smallest probe that can read the order "
                 "of time, and the one the registry gate uses.\n\n" + markdown_table(metrics, models),
                 "![benchmark](plots/benchmark.png)"]
    for suffix, title in REPORT_SECTIONS:
        table = markdown_table(metrics, models, suffix, gaps=suffix == "_determinable")
        if table.count("\n") > 1:
            sections.append(f"## {title}\n\n{table}")
    if metrics.get("footage"):
        sections.append(footage_section(metrics, models))
    if confusion:
        sections.append("## Confusion matrices (linear probe, test videos)\n\n![confusion](plots/confusion.png)")
    if time_vector:
        sections.append("## Time vector\n\nThe mean forward-minus-reversed direction of training clips; the "
                        "`time_vector` row scores the sign of test clips' projections.\n\n"
                        "![time vector](plots/time_vector.png)")
    return "\n\n".join(sections) + "\n"


def conclusion(metrics: dict) -> str:
    """What the numbers say, in words: the headline, and on which tasks the video model beats each
    baseline with the paired gap's lower bound above 0 (not merely a higher point estimate)."""
    tasks = metrics["tasks"]
    scored = [t for t in tasks if t != HEADLINE and isinstance(tasks[t], dict) and gap(VIDEO, "frames") in tasks[t]]
    if not scored:
        return ""
    lines = []
    head = tasks.get(HEADLINE)
    if head and VIDEO in head:
        lines.append(f"The video model's temporal score is {_cell(head, VIDEO)} (0 = the bag of frames, "
                     f"1 = the supervised ceiling).")
    for base in BASELINES:
        key = gap(VIDEO, base)
        won = [t for t in scored if tasks[t].get(key + CI_LOW, -1) > 0]
        lost = [t for t in scored if tasks[t].get(key + CI_HIGH, 1) < 0]
        if any(key in tasks[t] for t in scored):
            text = f"Against {MODEL_LABELS.get(base, base)}: better on {', '.join(won) or 'no task'}"
            lines.append(text + (f"; worse on {', '.join(lost)}" if lost else "") + " (95% paired intervals).")
    return " ".join(lines[:1]) + ("\n\n- " + "\n- ".join(lines[1:]) if len(lines) > 1 else "")


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
    groups = metrics["tasks"].get("real_arrow_of_time", {}).get("groups", {})
    if groups:
        shown = [m for m in models if any(m in g for g in groups.values())]
        lines += ["", "Real-video arrow of time per held-out group (linear probe, with the codec control):", "",
                  "| group | n test | " + " | ".join(MODEL_LABELS.get(m, m) for m in shown) + " |",
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


def bar_plot(metrics: dict, models: list[str], dest: Path, title: str) -> Path:
    """Per task: the ceiling and each model's primary score with its 95% interval; dashed: chance."""
    plt = _pyplot()
    cols = [SUPERVISED] + models
    tasks = [t for t, s in metrics["tasks"].items() if all(m in s for m in models) and t != HEADLINE]
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(1.8 + 1.8 * len(tasks), 3.8), dpi=120)
    for i, m in enumerate(cols):
        s = [metrics["tasks"][t] for t in tasks]
        acc = np.array([x.get(m, np.nan) for x in s], dtype=float)
        lo = acc - np.array([x.get(m + CI_LOW, x.get(m, np.nan)) for x in s], dtype=float)
        hi = np.array([x.get(m + CI_HIGH, x.get(m, np.nan)) for x in s], dtype=float) - acc
        ax.bar(np.arange(len(tasks)) + (i - (len(cols) - 1) / 2) * width, acc, width,
               yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=2,
               label=MODEL_LABELS.get(m, "supervised ceiling" if m == SUPERVISED else m))
    for j, t in enumerate(tasks):
        ax.hlines(metrics["tasks"][t]["chance"], j - 0.45, j + 0.45, colors="k", linestyles="dashed", linewidth=1)
    ax.set_xticks(np.arange(len(tasks)), [t.replace("_", "\n") for t in tasks], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right", ncol=3)
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
                ax.set_title(MODEL_LABELS.get(model, model), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{task}\ntruth", fontsize=7)
    if tasks:
        bar = fig.colorbar(image, ax=axes, shrink=0.6, fraction=0.03)
        bar.set_label("share of each true class", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    return _save(fig, dest)


def time_vector_plot(projections: dict[str, tuple[np.ndarray, np.ndarray]], dest: Path) -> Path:
    """Per model: histograms of forward and reversed test clips projected on the time vector, with
    the share of clips whose sign is right (the `time_vector` score)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(projections), figsize=(2.8 * len(projections), 2.8), dpi=110, squeeze=False)
    for ax, (model, (fwd, rev)) in zip(axes[0], projections.items()):
        bins = np.histogram_bin_edges(np.concatenate([fwd, rev]), bins=24)
        ax.hist(fwd, bins=bins, alpha=0.6, label="forward")
        ax.hist(rev, bins=bins, alpha=0.6, label="reversed")
        ax.axvline(0, color="k", linewidth=0.8)
        # as the score counts it: a projection of exactly 0 is half right
        right = (np.sum(fwd > 0) + np.sum(rev < 0) + 0.5 * np.sum(fwd == 0) + 0.5 * np.sum(rev == 0)) \
            / max(len(fwd) + len(rev), 1)
        ax.set_title(f"{MODEL_LABELS.get(model, model)}\nsign right: {right:.2f}", fontsize=8)
        ax.set_xlabel("projection on the time vector", fontsize=7)
        ax.set_ylabel("test clips", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, dest)


def _save(fig, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    _pyplot().close(fig)
    return dest
