"""Array operations every layer above builds on, with no knowledge of models or files.

`resize` (MATLAB-exact bicubic), `color` (BT.601 YCbCr), `metrics` (PSNR/SSIM by the paper
protocol, the sub-pixel grid measure), `ensemble` (the x8 self-ensemble) and `degradations`
(the real-world degradation chain and the fixed test presets).
"""
