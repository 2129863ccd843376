"""`python -m edge_agent.fake_upstream [--port N ...]`."""

import argparse

from edge_agent.fake_upstream import add_arguments, main_from_args

parser = argparse.ArgumentParser(prog="fake-upstream", description="A fake OpenAI + Anthropic upstream.")
add_arguments(parser)
main_from_args(parser.parse_args())
