"""The lab: measurements about models rather than work on images.

`bench` (CPU speed of the runtimes), `bench_batch` (batch runners), `frontier` (quality against
speed), `curves` (learning curves of runs) and `figure` (`superres compare` crops).
"""
