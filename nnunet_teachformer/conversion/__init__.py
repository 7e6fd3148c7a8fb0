"""Converters that write nnU-Net raw datasets: the synthetic PET/CT phantom, HECKTOR 2021, PI-CAI 2022."""
