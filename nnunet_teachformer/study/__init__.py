"""The cross-validated study: its fold x model runs, SLURM submission, status and the toy-scale demo."""
