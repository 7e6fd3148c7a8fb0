"""Teach-Former's losses (L_SEG, L_AFS, L_PWD), attention maps, loading and checking the teachers, and the
provenance record every trainer keeps (which cases and input data a model saw)."""
