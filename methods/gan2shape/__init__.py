"""GAN2Shape (Pan et al., ICLR 2021), registered as ``gan2shape`` (:mod:`.method`) and ``gan2shape_pretrained``.

* :mod:`.model` the five networks and the photo-geometric forward pass (canonical depth/albedo, view, light, render);
* :mod:`.losses` photometric L1, second-order smoothness and the Step-1 / Step-2 losses (pure functions);
* :mod:`.pseudo` random lights and views, view/light prior files and pseudo-sample rendering (Step 2 targets);
* :mod:`.latent` the partial-mapping latent offset ``w' = w + Δw(E(x))`` controlled by ``F1_d``;
* :mod:`.steps` Step 1, Step 2 (with pseudo samples and projection) and Step 3 as loss computations;
* :mod:`.fitting` the per-image stage schedule, the ellipsoid pre-fit and stage checkpoints;
* :mod:`.pretrain` joint pre-training over many images, DDP-ready;
* :mod:`.outputs` result images, rotation/relighting sweeps, meshes and the HTML page;
* :mod:`.method` the plugin: inversion, caching/resume, evaluation in the input view;
* :mod:`.predictor` the pre-trained networks as a one-pass predictor (``gan2shape_pretrained``).
"""
