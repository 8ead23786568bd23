"""GAN2Shape building blocks (``method.md`` sections 4-6); the full method is not implemented or registered yet.

* :mod:`.losses` photometric L1, second-order smoothness and the Step-1 / Step-2 losses (pure functions);
* :mod:`.pseudo` random lights and views, view/light prior files and pseudo-sample rendering (Step 2 targets);
* :mod:`.latent` the partial-mapping latent offset ``w' = w + Δw(E(x))`` controlled by ``F1_d``.
"""
