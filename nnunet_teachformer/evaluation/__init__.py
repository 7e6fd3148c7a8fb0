"""Evaluation of a Teach-Former study: the report table (Dice, HD95, parameters, GFLOPs, latency), paired
tests, plots and the case gallery, all read from nnU-Net's result folders."""
