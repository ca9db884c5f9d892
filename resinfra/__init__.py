"""resinfra: resilient infrastructure spanning clouds."""
