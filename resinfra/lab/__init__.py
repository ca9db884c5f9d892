"""The resinfra lab: the whole cluster (mesh, monitoring, healer) on one machine, in network namespaces."""
