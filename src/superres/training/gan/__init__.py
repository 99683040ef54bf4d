"""GAN training for perceptual super-resolution (SRGAN, ESRGAN, Real-ESRGAN): `superres train --gan`.

The generator is any registered network (`superres.models`); what only a GAN needs lives here:
`discriminators` (SRGAN's VGG-style network, Real-ESRGAN's U-Net with spectral norm; not
registered models: they map an image to realness logits, not LR to SR), `losses` (adversarial
losses, the random-feature and VGG perceptual losses, feature matching) and `trainer`
(`GanTraining`: the discriminator, its optimizer, the step the trainer runs when `config.gan` is
set, and their part of a checkpoint).
"""
