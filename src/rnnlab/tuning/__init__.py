"""Hyperparameter search with Optuna: a search space over config keys, a study of ordinary runs."""
