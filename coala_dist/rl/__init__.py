"""COALA-PG learning rules: returns (Algorithm 1), estimators, losses, naive learners, and the analytic IPD's rules."""
