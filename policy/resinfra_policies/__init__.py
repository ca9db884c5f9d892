"""resinfra's CrossGuard rules as plain functions: resource type and inputs in, violation messages out."""
