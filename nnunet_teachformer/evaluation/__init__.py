"""Evaluation of a Teach-Former study: the report table (Dice, HD95, parameters, GFLOPs, latency), paired
tests, plots and the case gallery, all read from nnU-Net's result folders; the challenges' own scoring
(HECKTOR 2021, PI-CAI 2022); the size table of every architecture (``summary``: it measures with
``complexity``, as the report does, so it stays here rather than making networks/ import evaluation/)."""
