"""The transformer-aware nnU-Net planner (``TeachFormerPlans``) and the ``teachformer plan`` step.

``planner``: ``TeachFormerPlanner`` (patches of multiples of 32, batch size from measured teacher memory,
PET normalisation); ``memory``: the training-memory measurement; ``plan``: fingerprint, plan and
preprocess a dataset through nnU-Net's Python API.
"""
