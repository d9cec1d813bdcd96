"""Faults a hostile environment causes, caused for real: an evicting or full Redis, a server that
is not Redis, a socket directory another user planted, a full disk. One module per area."""
