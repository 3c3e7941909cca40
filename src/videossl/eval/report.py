"""Benchmark outputs: markdown tables, PNG plots, the DVC plot data, and the console table.

metrics.json layout (one dict per task): `<model>` is the primary score (linear-probe accuracy;
cosine R@1 for retrieval; sign accuracy for the time vector) with `<model>_ci_low/_ci_high`;
`<model>_<probe>` the other probes' scores; `n_test` and `chance`.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

MODEL_LABELS = {"video": "video model", "frames": "bag of frames", "random_init": "random init", "pixels": "raw pixels"}
MODELS = list(MODEL_LABELS)  # the model, its bag-of-frames baseline, and the two floor baselines
BASELINES = MODELS[1:]
PROBE_LABELS = {"": "linear probe", "_attentive": "attentive probe", "_knn": "kNN",
                "_r5": "R@5", "_predictor": "predictor R@1", "_predictor_r5": "predictor R@5",
                "_within_video": "within-video R@1", "_no_control": "without codec control"}


def _cell(scores: dict, key: str) -> str:
    if not isinstance(scores.get(key), (int, float)):
        return "—"
    if f"{key}_ci_low" not in scores:
        return f"{scores[key]:.3f}"
    return f"{scores[key]:.3f} [{scores[key + '_ci_low']:.2f}, {scores[key + '_ci_high']:.2f}]"


def _num(scores: dict, key: str, fmt: str) -> str:
    return format(scores[key], fmt) if isinstance(scores.get(key), (int, float)) else "—"


def _gap(scores: dict, a: str, b: str) -> str:
    if isinstance(scores.get(a), (int, float)) and isinstance(scores.get(b), (int, float)):
        return f"{scores[a] - scores[b]:+.3f}"
    return "—"


def markdown_table(metrics: dict, models: list[str], suffix: str = "") -> str:
    """Every task: each model's test score with its 95% interval (for the probe `suffix`), the video
    model's gap to each baseline, n and chance."""
    base = [m for m in models if m != "video"]
    head = ("| task | " + " | ".join(MODEL_LABELS.get(m, m) for m in models) + " | "
            + " | ".join(f"video − {MODEL_LABELS.get(b, b)}" for b in base) + " | n test | chance |")
    rows = [head, "|---" * (len(models) + len(base) + 3) + "|"]
    for task, s in metrics["tasks"].items():
        if f"video{suffix}" not in s:
            continue
        rows.append(f"| {task} | " + " | ".join(_cell(s, m + suffix) for m in models) + " | "
                    + " | ".join(_gap(s, "video" + suffix, b + suffix) for b in base)
                    + f" | {_num(s, 'n_test', 'd')} | {_num(s, 'chance', '.3f')} |")
    return "\n".join(rows)


def console_table(metrics: dict, models: list[str]) -> str:
    names = [MODEL_LABELS.get(m, m) for m in models]
    width = max(len(t) for t in metrics["tasks"]) + 2
    lines = ["task".ljust(width) + "".join(n.rjust(15) for n in names) + "   n test"]
    for task, s in metrics["tasks"].items():
        lines.append(task.ljust(width) + "".join(f"{s[m]:15.3f}" if m in s else "—".rjust(15) for m in models)
                     + f"{s['n_test']:9d}")
    return "\n".join(lines)


def plot_rows(metrics: dict, models: list[str]) -> list[dict]:
    """DVC plot data: one row per (task, model, probe); `dvc plots diff` lines experiments up by `name`."""
    rows = []
    for task, s in metrics["tasks"].items():
        for m in models:
            for suffix, probe in PROBE_LABELS.items():
                if isinstance(s.get(m + suffix), (int, float)):
                    rows.append({"name": f"{task}/{m}{suffix}", "task": task, "model": m, "probe": probe,
                                 "score": s[m + suffix], "ci_low": s.get(f"{m}{suffix}_ci_low"),
                                 "ci_high": s.get(f"{m}{suffix}_ci_high")})
    return rows


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
    """Per task: each model's primary score with its 95% interval; dashed: chance."""
    plt = _pyplot()
    tasks = [t for t, s in metrics["tasks"].items() if all(m in s for m in models)]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(tasks), 3.8), dpi=120)
    for i, m in enumerate(models):
        acc = np.array([metrics["tasks"][t][m] for t in tasks])
        lo = acc - np.array([metrics["tasks"][t].get(m + "_ci_low", metrics["tasks"][t][m]) for t in tasks])
        hi = np.array([metrics["tasks"][t].get(m + "_ci_high", metrics["tasks"][t][m]) for t in tasks]) - acc
        ax.bar(np.arange(len(tasks)) + (i - (len(models) - 1) / 2) * width, acc, width,
               yerr=[lo, hi], capsize=2, label=MODEL_LABELS.get(m, m))
    for j, t in enumerate(tasks):
        ax.hlines(metrics["tasks"][t]["chance"], j - 0.45, j + 0.45, colors="k", linestyles="dashed", linewidth=1)
    ax.set_xticks(np.arange(len(tasks)), [t.replace("_", "\n") for t in tasks], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return _save(fig, dest)


def confusion_plot(confusions: dict[str, dict[str, np.ndarray]], classes: dict[str, list[str]], dest: Path) -> Path:
    """One row per task, one column per model: the primary probe's test confusion matrix (rows: truth)."""
    plt = _pyplot()
    tasks = list(confusions)
    models = list(next(iter(confusions.values()))) if tasks else []
    fig, axes = plt.subplots(len(tasks), len(models), figsize=(2.3 * len(models), 2.2 * len(tasks)), dpi=110,
                             squeeze=False)
    for i, task in enumerate(tasks):
        for j, model in enumerate(models):
            ax, cm = axes[i][j], confusions[task][model]
            ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
            for (r, c), v in np.ndenumerate(cm):
                ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=6)
            names = classes[task]
            ax.set_xticks(range(len(names)), names, fontsize=5, rotation=45)
            ax.set_yticks(range(len(names)), names, fontsize=5)
            if i == 0:
                ax.set_title(MODEL_LABELS.get(model, model), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{task}\ntruth", fontsize=7)
    fig.tight_layout()
    return _save(fig, dest)


def time_vector_plot(projections: dict[str, tuple[np.ndarray, np.ndarray]], dest: Path) -> Path:
    """Per model: histograms of forward and reversed test clips projected on the time vector."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(projections), figsize=(2.8 * len(projections), 2.6), dpi=110, squeeze=False)
    for ax, (model, (fwd, rev)) in zip(axes[0], projections.items()):
        bins = np.histogram_bin_edges(np.concatenate([fwd, rev]), bins=24)
        ax.hist(fwd, bins=bins, alpha=0.6, label="forward")
        ax.hist(rev, bins=bins, alpha=0.6, label="reversed")
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_title(MODEL_LABELS.get(model, model), fontsize=8)
        ax.set_xlabel("projection on the time vector", fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, dest)


def _save(fig, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    _pyplot().close(fig)
    return dest
