"""Sharing a trained model: the nnU-Net model zip and ONNX export, and the model card that travels with them."""
