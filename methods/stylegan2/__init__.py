"""StyleGAN2 for GAN2Shape: rosinality-compatible networks, pure-torch ops, checkpoint readers and converters.

* :mod:`.ops` kernels (upfirdn2d, fused leaky ReLU, modulation), pure PyTorch on any device;
* :mod:`.model` ``Generator`` / ``Discriminator`` with rosinality's state_dict keys;
* :mod:`.losses` the discriminator-feature reconstruction loss;
* :mod:`.checkpoints` reading rosinality ``.pt``, NVlabs ``.pkl`` (via :mod:`.nvlabs`) and our ``.safetensors``.
"""

from .checkpoints import (StyleGAN2Checkpoint, convert_checkpoint, load_discriminator, load_generator, load_latent,
                          read_checkpoint)
from .losses import discriminator_feature_loss, masked_feature_l1
from .model import Discriminator, Generator, stylegan2_channels

__all__ = ["Generator", "Discriminator", "stylegan2_channels", "discriminator_feature_loss", "masked_feature_l1",
           "StyleGAN2Checkpoint", "read_checkpoint", "convert_checkpoint", "load_generator", "load_discriminator",
           "load_latent"]
