# scenarios stage rules (see docs/ARCHITECTURE.md)
