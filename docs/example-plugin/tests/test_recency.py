"""The plugin's own tests: ehrprog's conformance suite, and a fit through the estimator."""

from ehrprog.plugins import get_backbone
from ehrprog.testing import check_backbone


def test_recency_backbone_conforms():
    check_backbone(get_backbone("recency"))


def test_recency_backbone_trains_in_the_estimator(tmp_path):
    import ehrprog as ep
    from ehrprog.datasets import simulate_ckd

    cohort = ep.tasks.CKDProgression().build(ep.read_omop(simulate_ckd(120, 3, tmp_path / "omop")))
    # validation_fraction=0: the trained epochs are kept (on a tiny cohort the validation score may
    # keep epoch 0, the tabular model alone, and the backbone would not move).
    est = ep.VisitProgressionEstimator(
        backbone="recency",
        backbone__half_life_years=2.0,
        embedding_dim=16,
        hidden_dim=16,
        max_epochs=2,
        validation_fraction=0.0,
        random_state=0,
    ).fit(cohort.X, cohort.y)
    assert est.model_.backbone.log_tau.exp().item() != 2.0  # the half-life was learned
    assert 0.0 <= est.score(cohort.X, cohort.y) <= 1.0
