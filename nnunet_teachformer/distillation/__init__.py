"""Teach-Former's losses (L_SEG, L_AFS, L_PWD), attention maps, and loading and checking the teachers."""
