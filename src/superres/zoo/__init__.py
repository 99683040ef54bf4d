"""Named models and their files: the shipped weights and cards, checkpoints, and reading weights safely.

`pretrained` (the shipped zoo, model names and the one name parser), `checkpoint` (safetensors
with JSON metadata), `torch_files` (torch's own formats through its allow-list unpickler) and
`packaged` (data files inside installed third-party wheels).
"""
