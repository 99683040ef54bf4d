"""Many images at once: batches of files, the journal that resumes them, Dask clusters and video.

`files` (`upscale_files`: inputs, outputs, shards, the worker), `journal` (the resumable journal,
shards and the overlapped reader/writer runner), `cluster` (the same batch as Dask tasks) and
`video` (frames through the batch worker, audio copied).
"""
