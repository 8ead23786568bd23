"""HoloGAN (Nguyen-Phuoc et al., ICCV 2019): model (:mod:`.model`), training (:mod:`.training`), rotation method (:mod:`.method`)."""
