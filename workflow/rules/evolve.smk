# evolve stage rules (see docs/ARCHITECTURE.md)
