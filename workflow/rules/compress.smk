# compress stage rules (see docs/ARCHITECTURE.md)
