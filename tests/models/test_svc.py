import numpy as np

from hsops.models.svc import _TopKHinge


def test_the_hinge_only_pushes_rows_inside_the_margin():
    trainer = _TopKHinge(n_features=3, n_classes=3, learning_rate=0.1, k=3)
    scores = np.array([[3.0, 1.0, 0.5],    # right by a margin of 2: no gradient
                       [1.0, 1.5, 0.2],    # wrong: push class 0 up, class 1 (the rival) down
                       [1.0, 0.0, 0.6]],   # right but inside the margin (0.4 < 1)
                      dtype=np.float32)
    loss, candidates, grads = trainer.gradient(scores.copy(), np.array([0, 0, 0]))
    assert candidates.tolist() == [[0, 1], [0, 1], [0, 2]]
    assert grads.tolist() == [[0.0, 0.0], [-1.0, 1.0], [-1.0, 1.0]]
    assert np.isclose(loss, (0 + 1.5 + 0.6) / 3)
