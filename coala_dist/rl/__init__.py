"""COALA-PG learning rules: returns (Algorithm 1), estimators, losses, naive learners."""
