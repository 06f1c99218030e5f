"""Parse a /metrics scrape (stdin) with the official Prometheus Python
client's parsers and print what they understood as JSON:
{"openmetrics": {family: {"type", "samples": [[name, labels, value], ...]}},
 "text": {...}}. Exits non-zero (with the parser's error) if either fails."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text


def families(parser, text):
    out = {}
    for fam in parser(text):
        out[fam.name] = {
            "type": fam.type,
            "samples": [[s.name, s.labels, s.value] for s in fam.samples],
        }
    return out


text = sys.stdin.read()
print(json.dumps({"openmetrics": families(parse_openmetrics, text), "text": families(parse_text, text)}))
