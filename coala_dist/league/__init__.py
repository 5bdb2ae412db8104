"""Evaluation beyond the paper: trained agents against each other and a zoo of reference co-players.

match.py   player kinds (fixed memory-one, frozen Hawk, naive learner) and jitted meta-episodes between any two
zoo.py     the IPD and Clean Up-lite zoos and (mismatched) fresh naive learners
league.py  where agents come from, the round-robin, per-player and per-group tables
report.py  matrices (CSV, JSON), heatmap, tables
mismatch.py  a frozen shaper against naive learners it was not trained against
exploiter.py a fresh meta agent trained against a frozen one, and what the frozen one loses
"""
