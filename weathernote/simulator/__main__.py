"""`python -m weathernote.simulator --port N`: the simulator on its own."""

import argparse

from weathernote.simulator import add_arguments, run

parser = argparse.ArgumentParser(prog="python -m weathernote.simulator", description=__doc__)
add_arguments(parser)
run(parser.parse_args())
