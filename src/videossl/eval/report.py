"""Benchmark outputs: the markdown table, the comparison plot, and the console table."""
from __future__ import annotations

from pathlib import Path

MODEL_LABELS = {"video": "video model", "frames": "bag of frames", "random_init": "random init", "pixels": "raw pixels"}
MODELS = list(MODEL_LABELS)  # the model, its bag-of-frames baseline, and the two floor baselines


def _cell(scores: dict, model: str) -> str:
    if model not in scores:
        return "—"
    if f"{model}_ci_low" not in scores:
        return f"{scores[model]:.3f}"
    return f"{scores[model]:.3f} [{scores[model + '_ci_low']:.2f}, {scores[model + '_ci_high']:.2f}]"


def _num(scores: dict, key: str, fmt: str) -> str:
    return format(scores[key], fmt) if isinstance(scores.get(key), (int, float)) else "—"


def markdown_table(metrics: dict, models: list[str]) -> str:
    """Every task: each model's test accuracy with its 95% interval, the video − frames gap, n, chance."""
    head = "| task | " + " | ".join(MODEL_LABELS.get(m, m) for m in models) + " | video − frames | n test | chance |"
    rule = "|---" * (len(models) + 4) + "|"
    rows = [head, rule]
    for task, s in metrics["tasks"].items():
        gap = f"{s['video'] - s['frames']:+.3f}" if "video" in s and "frames" in s else "—"
        rows.append(f"| {task} | " + " | ".join(_cell(s, m) for m in models)
                    + f" | {gap} | {_num(s, 'n_test', 'd')} | {_num(s, 'chance', '.3f')} |")
    return "\n".join(rows)


def console_table(metrics: dict, models: list[str]) -> str:
    names = [MODEL_LABELS.get(m, m) for m in models]
    width = max(len(t) for t in metrics["tasks"]) + 2
    lines = ["task".ljust(width) + "".join(n.rjust(15) for n in names) + "   n test"]
    for task, s in metrics["tasks"].items():
        lines.append(task.ljust(width) + "".join(f"{s[m]:15.3f}" for m in models) + f"{s['n_test']:9d}")
    return "\n".join(lines)


def bar_plot(metrics: dict, models: list[str], dest: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(metrics["tasks"])
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.8 + 1.9 * len(tasks), 3.6), dpi=120)
    for i, m in enumerate(models):
        acc = np.array([metrics["tasks"][t][m] for t in tasks])
        lo = acc - np.array([metrics["tasks"][t][m + "_ci_low"] for t in tasks])
        hi = np.array([metrics["tasks"][t][m + "_ci_high"] for t in tasks]) - acc
        ax.bar(np.arange(len(tasks)) + (i - (len(models) - 1) / 2) * width, acc, width,
               yerr=[lo, hi], capsize=3, label=MODEL_LABELS.get(m, m))
    for j, t in enumerate(tasks):
        chance = metrics["tasks"][t]["chance"]
        ax.hlines(chance, j - 0.45, j + 0.45, colors="k", linestyles="dashed", linewidth=1)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_title("Linear probes on frozen features (dashed: chance)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    plt.close(fig)
    return dest
