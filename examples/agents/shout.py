"""An agent for the `command` executor: reads the instance JSON on stdin, writes JSON to stdout."""
import json
import os
import sys

instance = json.load(sys.stdin)
text = instance["text"]
json.dump({"shout": text.upper(), "key": os.environ["AGENCY_IDEMPOTENCY_KEY"]}, sys.stdout)
