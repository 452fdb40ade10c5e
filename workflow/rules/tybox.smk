# tybox stage rules (see docs/ARCHITECTURE.md)
