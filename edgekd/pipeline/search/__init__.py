"""The search stage: an Optuna study (storage.py), one trial's evaluation (objective.py) and the records of what
was found (records.py)."""
