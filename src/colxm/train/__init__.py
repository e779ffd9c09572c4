"""Training: data (triples, n-way tuples, negative mining, teacher scores), losses, the trainer,
and post-hoc language adapters. Heavy imports stay inside the submodules."""
