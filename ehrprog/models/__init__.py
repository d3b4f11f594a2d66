"""Models: what a user fits, saves and loads. The composed estimator
(:class:`~ehrprog.models.estimator.VisitProgressionEstimator`) and its fit of the history
(:mod:`~ehrprog.models.history_fit`), its tabular part (:class:`~ehrprog.models.tabular.TabularModel`,
the boosted Cox of :mod:`~ehrprog.models.boosted_cox`, Breslow's baseline in
:mod:`~ehrprog.models.breslow`), the baselines (:mod:`~ehrprog.models.baselines`), pre-training a
backbone (:mod:`~ehrprog.models.pretrain`), training on Ray (:mod:`~ehrprog.models.ray_train`),
saving and loading (:mod:`~ehrprog.models.persistence`) and the model card
(:mod:`~ehrprog.models.model_card`).

May import :mod:`ehrprog.plugins` and every stage below it (see ``docs/architecture.md``). Nothing
is imported here up front: the tabular models need no torch."""
