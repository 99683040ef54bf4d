"""Running a network on images: backends, the fast CPU path, ONNX export, tiling and the one-image pipeline.

`backends` (torch, ONNX Runtime), `fast` (folded, channels-last CPU inference), `export` (ONNX),
`tiling` (exact tiles from the card's receptive field), `pipeline` (colour, alpha, 16-bit around
the network: `upscale_image`) and `input_check` (which model suits an image: JPEG quality, noise).
"""
