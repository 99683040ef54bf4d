"""Training presets shipped with superres: one JSON file per preset (`superres train --preset NAME`).

Each file holds TrainConfig keys; `"_comment"` says where the numbers come from. Paths are relative
to the directory `superres train` runs in (the repository root, beside ../shared/data).
"""
