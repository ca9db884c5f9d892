"""Pure renderers: typed specs in, file text out. No Pulumi in here."""
