"""Probe and metric functions on synthetic features whose answer is known in advance."""
import numpy as np
import pytest

from videossl.config import AttentiveProbeConfig, KnnProbeConfig
from videossl.eval.attentive import attentive_probe
from videossl.eval.probes import confusion_matrix, knn_probe, linear_probe
from videossl.eval.retrieval import RidgePath, ranks, retrieval_scores
from videossl.eval.report import time_vector_plot
from videossl.eval.time_vector import time_vector

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


def test_ranks_count_ties_against_the_query():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert ranks(queries, queries).tolist() == [0, 0]
    same = np.array([[1.0, 0.0], [1.0, 0.0]])  # two indistinguishable gallery items: neither is found
    assert ranks(queries, same).tolist() == [1, 1]
    assert ranks(queries, same, groups=np.array([0, 1])).tolist() == [0, 0]


@pytest.mark.parametrize("n, d", [(40, 12), (12, 40)])  # primal (N > D) and dual (N <= D) branches
def test_ridge_path_matches_the_normal_equations(n, d):
    rng = np.random.default_rng(n)
    x, y, q = rng.normal(size=(n, d)), rng.normal(size=(n, 5)), rng.normal(size=(3, d))
    xc, yc = x - x.mean(0), y - y.mean(0)
    for alpha, got in zip((0.01, 1.0), RidgePath(x, y).predict(q, (0.01, 1.0))):
        w = np.linalg.solve(xc.T @ xc + alpha * n * np.eye(d), xc.T @ yc)
        np.testing.assert_allclose(got, (q - x.mean(0)) @ w + y.mean(0), atol=1e-9)


def video_pairs(videos: int, clips: int, rng: np.random.Generator, dynamics: np.ndarray):
    """Per video an appearance (first half of the dims) shared by all its clips; per clip a state
    (second half) that the future clip carries on through `dynamics`. Appearance finds the video,
    only the dynamics find the clip."""
    half = DIM // 2
    appearance = np.repeat(rng.normal(size=(videos, half)) * 3.0, clips, axis=0)
    state = rng.normal(size=(videos * clips, half))
    noise = lambda: 0.05 * rng.normal(size=(videos * clips, DIM))  # noqa: E731
    present = np.hstack([appearance, state]) + noise()
    future = np.hstack([appearance, state @ dynamics]) + noise()
    return (present, future), np.repeat(np.arange(videos), clips)


def test_learned_predictor_beats_cosine_when_the_future_is_a_map_of_the_present():
    rng = np.random.default_rng(4)
    dynamics = np.linalg.qr(rng.normal(size=(DIM // 2, DIM // 2)))[0]  # a rotation: cosine cannot undo it
    (train, _), (val, _), (test, groups) = (video_pairs(v, 6, rng, dynamics) for v in (40, 10, 20))
    s = retrieval_scores(train, val, test, groups=groups)
    assert s["n"] == 120 and s["chance_r1"] == pytest.approx(1 / 120) and s["chance_r5"] == pytest.approx(5 / 120)
    assert s["predictor_r1"] >= 0.9 and s["predictor_r1"] > s["cosine_r1_ci_high"]
    assert s["predictor_r5"] >= s["predictor_r1"] and s["predictor_alpha"] in (0.01, 0.1, 1.0, 10.0, 100.0)
    # Within its own video the appearance is no help: cosine stays near 1/6, the predictor does not.
    assert s["within_video_n"] == 120 and s["within_video_chance_r1"] == pytest.approx(1 / 6)
    assert s["within_video_cosine_r1_ci_low"] <= 1 / 6 + 0.1
    assert s["within_video_predictor_r1"] >= 0.9
    for key in ("cosine_r1", "predictor_r5", "within_video_predictor_r1"):
        assert s[f"{key}_ci_low"] <= s[key] <= s[f"{key}_ci_high"]


def test_retrieval_gives_indistinguishable_futures_no_credit():
    rng = np.random.default_rng(5)
    present = rng.normal(size=(30, DIM))
    flat_future = np.ones((30, DIM))  # every future clip the same: nothing to retrieve
    pairs = (present, flat_future)
    s = retrieval_scores(pairs, pairs, pairs)
    assert s["cosine_r1"] == 0.0 and s["predictor_r5"] == 0.0 and "within_video_n" not in s


def planted_clips(n: int, rng: np.random.Generator, strength: float):
    """Forward and reversed features; the arrow of time, when planted, is a shift along one axis."""
    base = rng.normal(size=(n, DIM))
    shift = strength * np.eye(DIM)[3]
    return base + shift, base - shift + 0.3 * rng.normal(size=(n, DIM))


def test_time_vector_finds_a_planted_direction():
    rng = np.random.default_rng(6)
    score = time_vector(*planted_clips(200, rng, 2.0), *planted_clips(100, rng, 2.0), paired=True)
    assert score.accuracy >= 0.95 and score.n == 200 and score.pair_accuracy == 1.0 and score.pair_n == 100
    assert score.norm > 1.0 and score.separation > 3.0
    assert score.projections_fwd.shape == (100,) and (score.projections_fwd > score.projections_rev).all()


def test_time_vector_without_a_direction_is_at_chance():
    rng = np.random.default_rng(7)
    score = time_vector(*planted_clips(200, rng, 0.0), *planted_clips(150, rng, 0.0), paired=True)
    assert score.ci_low <= 0.5 <= score.ci_high and score.pair_ci_low <= 0.5 <= score.pair_ci_high


def test_time_vector_of_a_bag_of_frames_is_exactly_one_half(tmp_path):
    # Forward and reversed clips with the same features (up to float rounding): no direction at all.
    rng = np.random.default_rng(8)
    train, test = rng.normal(size=(50, DIM)), rng.normal(size=(40, DIM))
    score = time_vector(train, train + 1e-9, test, test, paired=True)
    assert score.norm == 0.0 and score.accuracy == 0.5 and score.pair_accuracy == 0.5
    assert not score.projections_fwd.any() and score.separation == 0.0
    png = time_vector_plot({"frames": (score.projections_fwd, score.projections_rev)}, tmp_path / "tv.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrieval_rejects_groups_inside_the_pairs():
    rng = np.random.default_rng(9)
    pairs = (rng.normal(size=(10, DIM)), rng.normal(size=(10, DIM)))
    with pytest.raises(ValueError, match="groups="):
        retrieval_scores(pairs, pairs, (*pairs, np.arange(10)))
    with pytest.raises(ValueError, match="groups has 3 entries"):
        retrieval_scores(pairs, pairs, pairs, groups=[0, 0, 1])
