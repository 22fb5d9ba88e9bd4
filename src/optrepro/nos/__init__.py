"""NOS (Morgan & Hougen 2024) search space, torch-free: optrepro.nos.space."""
