"""Running: training (train.py, the fused step trainstep.py), run configuration and guard,
checkpoints, evaluation, plots, the reproduce job and the command line.

What may import what: run/ imports every part below it; nothing below imports run/.
"""
