"""Training: the config, the data, the loop and everything a run keeps.

`config` (`TrainConfig`, validated), `data` (patch pairs, packing, degradations on the fly),
`loop` (`superres train`), `state` (model, optimiser and resumable checkpoints), `progress`
(logs and ETA), `losses` (the named pixel losses), `distill`, `ema`, `distributed`,
`runlock`/`runlog` (one writer per run folder; its history and plots) and `gan/` (perceptual
training).
"""
