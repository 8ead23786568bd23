"""Unsup3d (Wu, Rupprecht, Vedaldi, CVPR 2020): the symmetry-based photo-geometric autoencoder GAN2Shape builds on.

* :mod:`.model` the five networks and the forward pass on the shared renderer (canonical depth/albedo, their
  mirror, view, light, confidence);
* :mod:`.losses` confidence-weighted photometric and perceptual losses with and without flip (pure functions);
* :mod:`.perceptual` the perceptual feature network (our StyleGAN2 discriminator instead of VGG16, or none);
* :mod:`.training` data order, steps, resumable checkpoints, shipped weights, validation SIDE/MAD;
* :mod:`.prior` view/light Gaussians for GAN2Shape from a trained model;
* :mod:`.method` the registered ``unsup3d`` shape method;
* :mod:`.recipe` the registered ``unsup3d`` trainer (``bench train model=unsup3d`` on the single driver).
"""

from . import method as _method  # noqa: F401  (registers the "unsup3d" method)
from . import recipe as _recipe  # noqa: F401  (registers the "unsup3d" trainer)
