"""Prediction with a trained model: input checks, nnUNetv2_predict or the CPU paths, OpenVINO, postprocessing."""
