"""The IPsec mesh: one link per pair of sites, one crypto policy, a PSK per tunnel."""
