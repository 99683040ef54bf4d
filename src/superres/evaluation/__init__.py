"""Measuring models as the papers do: the protocol, and the perceptual measures.

`protocol` (`superres evaluate`: MATLAB-bicubic LR, Y PSNR/SSIM, shaved border), `lpips`
(LPIPS-approx), `niqe` (no-reference naturalness) and `vgg` (the VGG trunk both read locally).
"""
