"""resinfra: the Pulumi program. Everything happens in resinfra.stack."""

from resinfra import gc_thresholds
from resinfra.stack import main

gc_thresholds.for_the_program()  # this process only runs the program: see resinfra/gc_thresholds.py
main()
