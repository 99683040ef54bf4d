"""superres: single-image super-resolution on PyTorch.

Paper-faithful evaluation (MATLAB bicubic, BT.601 Y, shaved border), the SRCNN and RED-Net
families, pretrained weights shipped in the package and a tiled upscaler for real images.
"""

__version__ = "0.1.0"
