"""Probe and metric functions on synthetic features whose answer is known in advance."""
import numpy as np
import pytest

from videossl.config import AttentiveProbeConfig, KnnProbeConfig
from videossl.eval.attentive import attentive_probe
from videossl.eval.probes import confusion_matrix, knn_probe, linear_probe

TOKENS, DIM = 8, 16


def ordered_tokens(clips: int, rng: np.random.Generator):
    """Forward clips (label 1) whose tokens rise along one direction over time, and the same clips
    reversed (label 0): each pair holds the same tokens, so only their order tells the class."""
    direction = np.eye(DIM)[0]
    ramp = np.sort(rng.normal(size=(clips, TOKENS)), axis=1) * 2.0
    fwd = ramp[..., None] * direction + rng.normal(size=(clips, 1, DIM)) + 0.3 * rng.normal(size=(clips, TOKENS, DIM))
    x = np.concatenate([fwd, fwd[:, ::-1]]).astype(np.float32)
    return x, np.repeat([1, 0], clips)


def content_tokens(clips: int, classes: int, rng: np.random.Generator):
    """Class written in the tokens' content (a class-specific offset on some tokens), order irrelevant."""
    y = rng.integers(0, classes, clips)
    x = rng.normal(size=(clips, TOKENS, DIM))
    x[:, : TOKENS // 2, :classes] += 2.0 * np.eye(classes)[y][:, None, :]
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def order_task():
    rng = np.random.default_rng(0)
    return ordered_tokens(200, rng), ordered_tokens(50, rng), ordered_tokens(100, rng)


def test_attentive_probe_reads_time_order(order_task):
    score = attentive_probe(*order_task, classes=2, seed=0)
    assert score.accuracy >= 0.9 and score.n == 200
    assert score.ci_low < score.accuracy <= score.ci_high
    assert score.selected["weight_decay"] in AttentiveProbeConfig().weight_decays and 1 <= score.selected["epochs"]
    assert score.val_accuracy is not None and score.val_accuracy >= 0.8


def test_pooling_without_positions_is_blind_to_order(order_task):
    # The control: attention pooling is a weighted sum, so without the position embedding a clip
    # and its reversal get the same logits, as does a mean-pooled linear probe: both at chance.
    blind = attentive_probe(*order_task, 2, AttentiveProbeConfig(position=False), seed=0)
    assert blind.ci_low <= 0.5 <= blind.ci_high
    fwd, rev = blind.predictions[:100], blind.predictions[100:]
    assert (fwd == rev).mean() >= 0.95
    pooled = [(x.mean(1), y) for x, y in order_task]
    mean_probe = linear_probe(*pooled, classes=2, l2_grid=[1e-2], iters=50)
    assert mean_probe.ci_low <= 0.5 <= mean_probe.ci_high


def test_attentive_probe_reads_content_with_several_classes():
    rng = np.random.default_rng(1)
    score = attentive_probe(content_tokens(300, 3, rng), content_tokens(90, 3, rng), content_tokens(150, 3, rng),
                            classes=3, seed=0)
    assert score.accuracy >= 0.9
    assert set(np.unique(score.predictions)) <= {0, 1, 2}


def test_attentive_probe_is_deterministic_given_a_seed(order_task):
    a = attentive_probe(*order_task, 2, AttentiveProbeConfig(epochs=5), seed=3)
    b = attentive_probe(*order_task, 2, AttentiveProbeConfig(epochs=5), seed=3)
    assert np.array_equal(a.predictions, b.predictions)
    assert (a.accuracy, a.selected, a.val_accuracy) == (b.accuracy, b.selected, b.val_accuracy)


def test_the_weight_decay_grid_trained_side_by_side_equals_each_decay_trained_alone(order_task):
    # the collapsed form trains every decay of the grid in one product: each member must end exactly
    # where it would alone (same draws, disjoint parameters, per-coordinate Adam), so the grid picks
    # the best of the separate runs
    decays = [0.5, 0.005]
    cfg = AttentiveProbeConfig(epochs=6, weight_decays=decays)
    together = attentive_probe(*order_task, 2, cfg, seed=1)
    alone = [attentive_probe(*order_task, 2, cfg.model_copy(update={"weight_decays": [d]}), seed=1) for d in decays]
    best = max(alone, key=lambda s: s.val_accuracy)  # ties keep the first: the stronger decay, as the grid does
    assert together.selected == best.selected and together.val_accuracy == best.val_accuracy
    assert np.array_equal(together.predictions, best.predictions)
    assert {s.selected["weight_decay"] for s in alone} == set(decays)


def test_attentive_probe_without_validation_takes_strongest_decay_and_last_epoch(order_task):
    train, val, test = order_task
    empty = (val[0][:0], val[1][:0])
    score = attentive_probe(train, empty, test, 2, AttentiveProbeConfig(epochs=4, weight_decays=[0.1, 0.01]))
    assert score.selected == {"weight_decay": 0.1, "epochs": 4} and score.val_accuracy is None
    with pytest.raises(ValueError, match=r"\[N, L, D\]"):
        attentive_probe((train[0][:, 0], train[1]), val, test, classes=2)


def test_knn_probe_separates_clusters_and_stays_at_chance_on_random_labels():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 10)) * 4.0

    def clusters(n):
        y = rng.integers(0, 3, n)
        return (centres[y] + rng.normal(size=(n, 10))).astype(np.float32), y

    score = knn_probe(clusters(300), clusters(60), clusters(150), 3, KnnProbeConfig(ks=[1, 5, 20]))
    assert score.accuracy >= 0.95 and score.n == 150 and score.selected["k"] in (1, 5, 20)
    noise = lambda n: (rng.normal(size=(n, 10)).astype(np.float32), rng.integers(0, 2, n))  # noqa: E731
    chance = knn_probe(noise(300), noise(100), noise(300), classes=2)
    assert chance.ci_low <= 0.5 <= chance.ci_high


def test_knn_probe_breaks_ties_deterministically():
    # Two identical training points with different labels: equal votes go to the lower class index.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    train = (x, np.array([1, 0, 1]))
    test = (np.array([[1.0, 0.0]], dtype=np.float32), np.array([0]))
    score = knn_probe(train, (x[:0], np.array([], dtype=np.int64)), test, 2, KnnProbeConfig(ks=[2]))
    assert score.predictions.tolist() == [0] and score.selected == {"k": 2} and score.val_accuracy is None


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]] and cm.sum() == 6
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.array([0, 1]), np.array([0]), classes=2)


def test_every_probe_returns_test_scores_whose_argmax_is_its_prediction(order_task):
    (xtr, ytr), (xva, yva), (xte, yte) = order_task
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    for score in (linear_probe((flat(xtr), ytr), (flat(xva), yva), (flat(xte), yte), 2, [0.1, 10.0], 50),
                  knn_probe((xtr, ytr), (xva, yva), (xte, yte), 2),
                  attentive_probe((xtr, ytr), (xva, yva), (xte, yte), 2, AttentiveProbeConfig(epochs=3), seed=0)):
        assert score.scores.shape == (len(yte), 2)
        assert np.array_equal(score.scores.argmax(1), score.predictions)


def test_probe_blocks_make_a_deeper_probe_of_the_same_tokens(order_task):
    """V-JEPA 2's deeper probe (probe_eval.attentive.blocks = N): N-1 self-attention blocks over the
    tokens before the pooler, one copy per weight decay. It reads what the pooler reads (time order),
    is another function of the tokens, and is seeded like the rest; blocks = 1 is the pooler alone."""
    cfg = AttentiveProbeConfig(blocks=2)
    deep, again = (attentive_probe(*order_task, 2, cfg, seed=0) for _ in range(2))
    flat = attentive_probe(*order_task, 2, AttentiveProbeConfig(), seed=0)
    assert deep.accuracy >= 0.9 and np.array_equal(deep.scores, again.scores)
    assert not np.allclose(deep.scores, flat.scores)
