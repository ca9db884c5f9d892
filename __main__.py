"""resinfra: the Pulumi program. Everything happens in resinfra.stack."""

from resinfra.stack import main

main()
